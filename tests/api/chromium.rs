//! Headless Chromium for the browser tests (`browser.rs`): a `chromedriver` started on a
//! spare port in a process group of its own, killed with that group (Chromium included) when
//! dropped, and a WebDriver session (`fantoccini`) with a fresh profile. Debian's `chromium`
//! and `chromium-driver` come from `scripts/setup.sh --with-browser`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use crate::helpers::{free_port, random_suffix};

/// Chromium's flags: headless, and nothing that reaches for the network on its own (this
/// machine's network is closed, and a test must not wait for it).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=900,1000",
];

/// A `chromedriver` in a process group of its own (so Chromium goes with it), and its
/// scratch directory.
pub struct Driver {
    child: std::process::Child,
    /// Its scratch directory (logs, the browser profile), removed with it.
    pub dir: PathBuf,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group: chromedriver and the Chromium processes it started.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

/// Starts `chromedriver` on a spare port and waits until it is ready.
pub async fn start_driver() -> Driver {
    let program = find_program("chromedriver")
        .expect("chromedriver not found: run scripts/setup.sh --with-browser (installs chromium and chromium-driver)");
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("seckill-browser-{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
    let child = {
        use std::os::unix::process::CommandExt;
        Command::new(program)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start chromedriver")
    };
    let driver = Driver {
        child,
        dir,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = http.get(format!("{}/status", driver.url)).send().await;
        if let Ok(answer) = ready {
            let status: Value = answer.json().await.unwrap_or(Value::Null);
            if status["value"]["ready"] == true {
                break;
            }
        }
        assert!(Instant::now() < deadline, "chromedriver did not answer within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    driver
}

/// A headless Chromium session of `driver`, with a fresh profile.
pub async fn open_browser(driver: &Driver) -> Client {
    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
    args.push(format!("--user-data-dir={}", driver.dir.join("profile").display()));
    let mut options = json!({ "args": args });
    if Path::new("/usr/bin/chromium").is_file() {
        options["binary"] = json!("/usr/bin/chromium");
    }
    let mut capabilities = Capabilities::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session (is chromium installed? scripts/setup.sh --with-browser)")
}

/// A Chrome DevTools command through chromedriver's `goog/cdp/execute`.
#[derive(Debug)]
pub struct Cdp {
    /// The DevTools method, e.g. `Page.addScriptToEvaluateOnNewDocument`.
    pub cmd: &'static str,
    /// Its parameters.
    pub params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/goog/cdp/execute", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params});
        (Method::POST, Some(body.to_string()))
    }
}
