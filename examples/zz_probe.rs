use axum::{routing::get, Router};
use std::net::SocketAddr;

fn app() -> Router {
    Router::new().route("/health", get(|| async { "ok" }))
}

fn listener(addr: SocketAddr) -> tokio::net::TcpListener {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.set_reuseaddr(true).unwrap();
    s.set_reuseport(true).unwrap();
    s.bind(addr).unwrap();
    s.listen(1024).unwrap()
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or("mt".into());
    let addr: SocketAddr = "127.0.0.1:18095".parse().unwrap();
    if mode == "mt" {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { axum::serve(listener(addr), app()).await.unwrap() });
    } else {
        let n: usize = mode.trim_start_matches("tpc").parse().unwrap_or(2);
        let hs: Vec<_> = (0..n)
            .map(|_| {
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async { axum::serve(listener(addr), app()).await.unwrap() });
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
}
