use super::*;

#[test]
fn per_address_and_token_limits() {
    let c = Config::default();
    assert_eq!(
        (c.funnel.per_ip_rps, c.funnel.token_per_ip_rps),
        (0, 0),
        "off until the proxies are named"
    );
    assert_eq!((c.funnel.token_per_user_rps, c.funnel.token_per_user_burst), (1, 5));
    assert_eq!(c.funnel.rate_limit_keys_max, 100_000);
    let c = Config::parse(
        "funnel:\n  per_ip_rps: 50\n  per_ip_burst: 100\n  token_per_ip_rps: 2\n  token_per_ip_burst: 10\n  rate_limit_keys_max: 5000\nauth:\n  trusted_proxies: [10.0.0.0/8]\n",
    )
    .unwrap();
    assert_eq!((c.funnel.per_ip_rps, c.funnel.per_ip_burst), (50, 100));
    assert_eq!((c.funnel.token_per_ip_rps, c.funnel.token_per_ip_burst), (2, 10));
    assert_eq!(c.funnel.rate_limit_keys_max, 5000);
    // Trusted proxies are allowed (and used for the client address) in every mode.
    assert_eq!(c.auth.mode, AuthMode::None);
    c.validate().unwrap();
    let mut bad = c.clone();
    bad.funnel.rate_limit_keys_max = 0;
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("funnel.rate_limit_keys_max"));
}

#[test]
fn the_shipped_config_yaml_shows_the_funnels_defaults() {
    let shipped = Config::parse(include_str!("../../config.yaml")).unwrap();
    let yaml = |f: &FunnelConfig| serde_yaml::to_string(f).unwrap();
    assert_eq!(yaml(&shipped.funnel), yaml(&FunnelConfig::default()));
    assert!(shipped.auth.trusted_proxies.is_empty());
    assert_eq!(shipped.consumer.linger_ms, ConsumerConfig::default().linger_ms);
}

#[test]
fn aof_always_has_its_own_pipeline() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.funnel.pipeline_under(Durability::AofAlways), 2);
    for other in [Durability::AofEverysec, Durability::Replicas, Durability::None] {
        assert_eq!(c.funnel.pipeline_under(other), 1, "{other:?}");
    }
    let c = Config::parse("funnel:\n  batch_pipeline: 3\n  batch_pipeline_aof_always: 1\n").unwrap();
    assert_eq!(c.funnel.pipeline_under(Durability::AofAlways), 1);
    assert_eq!(c.funnel.pipeline_under(Durability::None), 3);
    let err = Config::parse("funnel:\n  batch_pipeline_aof_always: 0\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("funnel.batch_pipeline_aof_always"), "{err}");
}

#[test]
fn lingers_are_bounded() {
    let c = Config::parse("funnel:\n  batch_linger_us: 0\nconsumer:\n  linger_ms: 0\n").unwrap();
    assert_eq!((c.funnel.batch_linger_us, c.consumer.linger_ms), (0, 0));
    c.validate().unwrap();
    for (yaml, field) in [
        ("funnel:\n  batch_linger_us: 100001\n", "funnel.batch_linger_us"),
        (
            "funnel:\n  batch_linger_us_aof_always: 100001\n",
            "funnel.batch_linger_us_aof_always",
        ),
        ("consumer:\n  linger_ms: 10001\n", "consumer.linger_ms"),
    ] {
        let err = Config::parse(yaml).unwrap().validate().unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn the_group_commit_delay_is_the_aof_always_one_only_under_aof_always() {
    let c = Config::parse("funnel:\n  batch_linger_us: 300\n  batch_linger_us_aof_always: 2000\n").unwrap();
    assert_eq!(
        c.funnel.batch_wait(Durability::AofAlways),
        BatchWait::ForExpected(Duration::from_micros(2000))
    );
    for other in [Durability::AofEverysec, Durability::Replicas, Durability::None] {
        assert_eq!(
            c.funnel.batch_wait(other),
            BatchWait::WhileArriving(Duration::from_micros(300)),
            "{other:?}"
        );
    }
    let off = Config::parse("funnel:\n  batch_linger_us: 0\n  batch_linger_us_aof_always: 0\n").unwrap();
    for any in [Durability::AofAlways, Durability::None] {
        assert_eq!(off.funnel.batch_wait(any), BatchWait::Never, "{any:?}");
    }
    let defaults = FunnelConfig::default();
    assert!(defaults.batch_linger_us > 0 && defaults.batch_linger_us_aof_always > 0);
}

#[test]
fn http_tokens_open_open_before_secs_ahead_of_the_start() {
    let mut token = TokenConfig::default();
    assert!(!token.open_for(1) && token.open_for(0) && token.open_for(-5));
    token.open_before_secs = 60;
    assert!(token.open_for(60_000) && !token.open_for(60_001));
    token.open_before_secs = u64::MAX;
    assert!(token.open_for(i64::MAX));
}

#[test]
fn only_a_long_secret_of_ones_own_is_strong() {
    let mut token = TokenConfig::default();
    assert!(token.weak_secret().unwrap().contains("shipped default"));
    token.secret = "x".repeat(MIN_SECRET_BYTES - 1);
    assert!(token.weak_secret().unwrap().contains("only 31 bytes"));
    token.secret = "x".repeat(MIN_SECRET_BYTES);
    assert_eq!(token.weak_secret(), None);
}

#[test]
fn malformed_yaml_names_line_and_field() {
    let err = Config::parse("database:\n  url: 5\n  max_connections: lots\n").unwrap_err();
    assert!(err.contains("max_connections"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    let err = Config::parse("redis:\n  urll: x\n").unwrap_err();
    assert!(err.contains("urll"), "{err}");
}

#[test]
fn env_overrides_file() {
    let mut c = Config::parse("redis:\n  key_prefix: file\n").unwrap();
    c.apply_env(|n| (n == "SECKILL_KEY_PREFIX").then(|| "env".to_string()))
        .unwrap();
    assert_eq!(c.redis.key_prefix, "env");
    assert_eq!(c.database.url, DatabaseConfig::default().url);
    assert!(c.payment.webhook_secret.is_empty(), "callbacks are off by default");
    c.apply_env(|n| (n == "SECKILL_PAYMENT_WEBHOOK_SECRET").then(|| "hook".to_string()))
        .unwrap();
    assert_eq!(c.payment.webhook_secret, "hook");
}

#[test]
fn durability_from_file_and_env() {
    let c = Config::parse("redis:\n  durability: aof_everysec\n  wait_replicas: 1\n").unwrap();
    assert_eq!(c.redis.durability, Durability::AofEverysec);
    assert_eq!(c.redis.wait_replicas, 1);
    assert_eq!(Config::default().redis.durability, Durability::AofAlways);
    let err = Config::parse("redis:\n  durability: sometimes\n").unwrap_err();
    assert!(err.contains("aof_always"), "{err}");
    let mut c = Config::default();
    c.apply_env(|n| (n == "SECKILL_REDIS_DURABILITY").then(|| "none".to_string()))
        .unwrap();
    assert_eq!(c.redis.durability, Durability::None);
    let err = c
        .apply_env(|n| (n == "SECKILL_REDIS_DURABILITY").then(|| "nope".to_string()))
        .unwrap_err();
    assert!(err.to_string().contains("SECKILL_REDIS_DURABILITY"), "{err}");
}

#[test]
fn http_limits() {
    let mut c = Config::default();
    assert!(c.validate().is_ok());
    assert!(c.http.connection_cap() >= 16, "three quarters of the open-file limit");
    c.http.max_connections = 5;
    assert_eq!(c.http.connection_cap(), 5);
    for ms in [0, 3_600_001] {
        let mut bad = Config::default();
        bad.http.header_read_timeout_ms = ms;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("http.header_read_timeout_ms"), "{err}");
        let mut bad = Config::default();
        bad.http.body_read_timeout_ms = ms;
        assert!(bad.validate().is_err());
    }
}

#[test]
fn durations_are_written_for_people() {
    let c = Config::default();
    assert_eq!(c.payment.timeout, Duration::from_secs(900));
    assert_eq!(c.orders.reconcile_window, Duration::from_secs(86_400));
    assert_eq!(c.scheduler.tick_ms, 200);
    let c = Config::parse("payment:\n  timeout: 30m\norders:\n  reconcile_window: 2h\n").unwrap();
    assert_eq!(c.payment.timeout, Duration::from_secs(1800));
    assert_eq!(c.orders.reconcile_window, Duration::from_secs(7200));
    let err = Config::parse("payment:\n  timeout: soon\n").unwrap_err();
    assert!(
        err.contains("payment") && err.contains("line 2") && err.contains("15m"),
        "{err}"
    );
    let round_trip = Config::parse(&serde_yaml::to_string(&c).unwrap()).unwrap();
    assert_eq!(round_trip.payment.timeout, Duration::from_secs(1800));
    let mut bad = Config::default();
    bad.payment.timeout = Duration::ZERO;
    assert!(bad.validate().unwrap_err().to_string().contains("payment.timeout"));
    bad = Config::default();
    bad.scheduler.tick_ms = 0;
    assert!(bad.validate().unwrap_err().to_string().contains("scheduler.tick_ms"));
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(redact_url("mysql://root:pw@h:3306/db"), "mysql://root:***@h:3306/db");
    assert_eq!(redact_url("redis://:secret@h:6379/0"), "redis://:***@h:6379/0");
    assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    assert_eq!(url_address("mysql://root:pw@h:3306/db"), "h:3306");
}

#[test]
fn numeric_user_ids_below_is_off_by_default_and_bounded() {
    assert_eq!(Config::default().redis.numeric_user_ids_below, 0);
    let c = Config::parse("redis:\n  numeric_user_ids_below: 16777216\n").unwrap();
    assert_eq!(c.redis.numeric_user_ids_below, crate::totals::MAX_IDS_BELOW);
    c.validate().unwrap();
    let err = Config::parse("redis:\n  numeric_user_ids_below: 16777217\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("redis.numeric_user_ids_below"), "{err}");
}
