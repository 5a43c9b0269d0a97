use super::*;

const ORIGIN: &str = "/home/u/.config/pactfs/config.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(ORIGIN))
}

/// Expects `text` to be refused as `Invalid` and returns (line, key, message).
fn refused(text: &str) -> (usize, String, String) {
    match parse(text) {
        Err(ConfigError::Invalid { line, key, message, .. }) => (line, key, message),
        other => panic!("expected ConfigError::Invalid for {text:?}, got {other:?}"),
    }
}

/// The dotted keys of a TOML document, sections included, sorted.
fn keys_of(text: &str) -> Vec<String> {
    let table: toml::Table = toml::from_str(text).expect("test TOML parses");
    let mut keys = Vec::new();
    for (section, value) in &table {
        keys.push(section.clone());
        if let Some(inner) = value.as_table() {
            keys.extend(inner.keys().map(|key| format!("{section}.{key}")));
        }
    }
    keys.sort();
    keys
}

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(parse("").expect("empty parses"), Config::default());
    assert_eq!(parse("# nothing\n\n[storage]\n[mount]\n").expect("parses"), Config::default());
}

#[test]
fn default_config_toml_is_the_defaults() {
    assert_eq!(parse(DEFAULT_CONFIG_TOML).expect("DEFAULT_CONFIG_TOML parses"), Config::default());
}

#[test]
fn default_config_toml_and_to_toml_list_every_key() {
    let written = keys_of(&Config::default().to_toml());
    assert_eq!(keys_of(DEFAULT_CONFIG_TOML), written);
    assert_eq!(written.len(), 6 + 6 + 3 + 7 + 8 + 4 + 1, "6 sections and 29 keys");
}

#[test]
fn every_section_can_be_overridden() {
    let config = parse(
        r#"
        [storage]
        replication = 5
        chunk_min = "64KiB"
        chunk_avg = "128KiB"
        chunk_max = 1048576
        cache_size = "500MB"
        capacity = "2TiB"
        [budget]
        credits_per_month = 12.5
        max_price_per_gib_month = 0
        max_retrieval_price = 1
        [market]
        promise_duration = "2w"
        renew_window = "1d12h"
        audit_interval = "90m"
        min_reputation = 1
        explore_share = 0.0
        repair_grace = "0s"
        [provider]
        enabled = true
        capacity = "1GiB"
        data_dir = "/srv/pactfs"
        price_per_gib_month = 0.25
        price_per_gib_retrieval = 3
        voluntary_capacity = "2GiB"
        [network]
        mode = "market"
        listen = []
        bootstrap = ["/dns4/seed.example/tcp/4701/p2p/12D3KooWExample"]
        mdns = true
        [mount]
        allow_other = true
        "#,
    )
    .expect("parses");
    let storage = StorageConfig {
        replication: 5,
        chunk_min: ByteSize(64 * KIB),
        chunk_avg: ByteSize(128 * KIB),
        chunk_max: ByteSize(MIB),
        cache_size: ByteSize(500_000_000),
        capacity: ByteSize(2 * TIB),
    };
    assert_eq!(config.storage, storage);
    let budget = BudgetConfig { credits_per_month: 12.5, max_price_per_gib_month: 0.0, max_retrieval_price: 1.0 };
    assert_eq!(config.budget, budget);
    let market = MarketConfig {
        promise_duration: 14 * DAY,
        renew_window: DAY + 12 * HOUR,
        audit_interval: Duration::from_secs(90 * 60),
        min_reputation: 1.0,
        explore_share: 0.0,
        repair_grace: Duration::ZERO,
        payment_interval: DAY,
    };
    assert_eq!(config.market, market);
    assert_eq!(config.provider.data_dir.as_deref(), Some(Path::new("/srv/pactfs")));
    assert!(config.provider.enabled);
    assert_eq!(config.provider.capacity, ByteSize(GIB));
    assert_eq!(config.provider.price_per_gib_month, 0.25);
    assert_eq!(config.provider.price_per_gib_retrieval, 3.0);
    assert_eq!(config.provider.voluntary_capacity, ByteSize(2 * GIB));
    assert_eq!(Config::default().provider.voluntary_capacity, ByteSize(0), "no voluntary copies unless asked");
    assert_eq!(config.network.mode, NetworkMode::Market);
    assert!(config.network.listen.is_empty());
    assert_eq!(config.network.bootstrap, ["/dns4/seed.example/tcp/4701/p2p/12D3KooWExample"]);
    assert!(config.network.mdns);
    assert!(config.mount.allow_other);
}

#[test]
fn a_partial_section_keeps_the_other_defaults() {
    let config = parse("[market]\nmin_reputation = 0.9\n").expect("parses");
    assert_eq!(config.market.min_reputation, 0.9);
    assert_eq!(config.market.promise_duration, 30 * DAY);
    assert_eq!(config.storage, StorageConfig::default());
}

#[test]
fn errors_display_path_line_column_and_key() {
    let text = "# pactfs\n\n[storage]\nreplication = 3\n\n# the smallest chunk\nchunk_min = \"abc\"\n";
    let err = parse(text).expect_err("abc is not a size");
    assert_eq!(
        err.to_string(),
        r#"/home/u/.config/pactfs/config.toml:7:13: storage.chunk_min: expected a size like "256KiB", got "abc""#
    );
    assert_eq!((err.line(), err.col(), err.key()), (Some(7), Some(13), Some("storage.chunk_min")));
    assert_eq!(err.path(), Path::new(ORIGIN));
}

#[test]
fn columns_count_characters_and_crlf_is_fine() {
    let err = parse("[storage] # é\r\nchunk_min = \"abc\"\r\n").expect_err("not a size");
    assert_eq!((err.line(), err.col()), (Some(2), Some(13)));
    let err = parse("[network]\nlisten = [\"/é\", \"x\"]").expect_err("not a multiaddr");
    assert_eq!((err.line(), err.col(), err.key()), (Some(2), Some(17), Some("network.listen")));
}

#[test]
fn unknown_keys_are_refused_at_their_line() {
    let (line, key, message) = refused("[storage]\nreplication = 3\nreplicaton = 4\n");
    assert_eq!((line, key.as_str()), (3, "storage.replicaton"));
    assert!(message.starts_with("unknown key; expected one of `replication`"), "{message}");
    for (text, line, key) in [
        ("\n[storag]\n", 2, "storag"),
        ("[mount]\nallow = true\n", 2, "mount.allow"),
        ("network.mdns = true\nnetwork.dht = true\n", 2, "network.dht"),
        ("[network]\nmdns = { enabled = true }\n", 2, "network.mdns"),
    ] {
        let (got_line, got_key, message) = refused(text);
        assert_eq!((got_line, got_key.as_str()), (line, key), "{text:?}: {message}");
    }
}

#[test]
fn wrong_types_are_refused_with_line_and_key() {
    for (text, line, key, expected) in [
        ("[storage]\nreplication = \"three\"", 2, "storage.replication", "expected an integer"),
        ("[storage]\nreplication = 2.5", 2, "storage.replication", "expected an integer"),
        ("\n[budget]\ncredits_per_month = \"lots\"", 3, "budget.credits_per_month", "expected a number"),
        ("[mount]\nallow_other = 1", 2, "mount.allow_other", "expected a boolean"),
        ("[market]\naudit_interval = 60", 2, "market.audit_interval", r#"a duration like "30d""#),
        ("[network]\nlisten = \"/ip4/0.0.0.0/tcp/1\"", 2, "network.listen", "expected a sequence"),
        ("[network]\nlisten = [\"/ip4/0.0.0.0/tcp/1\",\n  7]", 3, "network.listen", "expected a string"),
        ("storage = 5", 1, "storage", "expected a [storage] table"),
        ("[storage]\nchunk_min = -4", 2, "storage.chunk_min", "cannot be negative"),
    ] {
        let (got_line, got_key, message) = refused(text);
        assert_eq!((got_line, got_key.as_str()), (line, key), "{text:?}: {message}");
        assert!(message.contains(expected), "{text:?}: {message}");
    }
}

#[test]
fn out_of_range_values_are_refused_with_line_and_key() {
    for (text, line, key) in [
        ("[storage]\nreplication = 0", 2, "storage.replication"),
        ("[storage]\nreplication = 17", 2, "storage.replication"),
        ("[storage]\nchunk_min = \"32B\"", 2, "storage.chunk_min"),
        ("[storage]\nchunk_min = \"1001B\"", 2, "storage.chunk_min"), // fastcdc wants even sizes
        ("[storage]\nchunk_max = \"32MiB\"", 2, "storage.chunk_max"),
        // Both set: the minimum is blamed. Only the average set: it is blamed.
        ("[storage]\nchunk_avg = \"512KiB\"\nchunk_min = \"768KiB\"", 3, "storage.chunk_min"),
        ("[storage]\nchunk_avg = \"128KiB\"", 2, "storage.chunk_avg"),
        ("[storage]\nchunk_max = \"512KiB\"", 2, "storage.chunk_max"),
        ("[storage]\ncapacity = 0", 2, "storage.capacity"),
        ("[budget]\nmax_retrieval_price = -1", 2, "budget.max_retrieval_price"),
        ("[budget]\ncredits_per_month = nan", 2, "budget.credits_per_month"),
        ("[market]\nmin_reputation = 1.5", 2, "market.min_reputation"),
        ("[market]\nexplore_share = -0.1", 2, "market.explore_share"),
        ("[market]\npromise_duration = \"3d\"\nrenew_window = \"3d\"", 3, "market.renew_window"),
        ("[market]\nrenew_window = \"31d\"", 2, "market.renew_window"),
        ("[market]\npromise_duration = \"2d\"", 2, "market.promise_duration"),
        ("[market]\naudit_interval = \"0ms\"", 2, "market.audit_interval"),
        ("[provider]\nenabled = true\ncapacity = 0", 3, "provider.capacity"),
        ("[provider]\ndata_dir = \"relative/dir\"", 2, "provider.data_dir"),
        ("[provider]\nprice_per_gib_month = -0.5", 2, "provider.price_per_gib_month"),
        ("[network]\nmode = \"mesh\"", 2, "network.mode"),
        ("[network]\nlisten = [\n  \"/ip4/0.0.0.0/tcp/1\",\n  \"0.0.0.0:1\",\n]", 4, "network.listen"),
        ("[network]\nbootstrap = [\"/ip4/10.0.0.1/tcp/4701\"]", 2, "network.bootstrap"),
    ] {
        let (got_line, got_key, message) = refused(text);
        assert_eq!((got_line, got_key.as_str()), (line, key), "{text:?}: {message}");
    }
    // A disabled provider may offer nothing.
    assert!(parse("[provider]\ncapacity = 0").is_ok());
}

#[test]
fn range_messages_name_the_limits() {
    assert_eq!(refused("[storage]\nreplication = 0").2, "must be between 1 and 16, got 0");
    assert_eq!(
        refused("[market]\nrenew_window = \"30d\"").2,
        "market.renew_window (30d) must be less than market.promise_duration (30d)"
    );
    assert_eq!(refused("[storage]\nchunk_max = \"32MiB\"").2, "must be an even size from 1KiB to 16MiB, got 32MiB");
}

#[test]
fn syntax_errors_carry_the_line() {
    for (text, line) in [("[storage\nreplication = 3", 1), ("[storage]\nreplication = 3\nreplication = 4", 3)] {
        match parse(text) {
            Err(err @ ConfigError::Syntax { .. }) => assert_eq!(err.line(), Some(line), "{err}"),
            other => panic!("expected ConfigError::Syntax for {text:?}, got {other:?}"),
        }
    }
}

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let missing = Config::load(&path).expect_err("no file yet");
    assert!(matches!(&missing, ConfigError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound));
    assert_eq!((missing.line(), missing.key()), (None, None));
    std::fs::write(&path, "[mount]\nallow_other = true\n").expect("write");
    assert!(Config::load(&path).expect("loads").mount.allow_other);
    std::fs::write(&path, "[mount]\nallow_other = 1\n").expect("write");
    let err = Config::load(&path).expect_err("wrong type");
    assert!(err.to_string().starts_with(&format!("{}:2:15: mount.allow_other: ", path.display())), "{err}");
}

#[test]
fn sizes_parse_and_display() {
    for (text, bytes) in [
        ("0", 0),
        ("100", 100),
        ("512B", 512),
        ("256KiB", 256 * KIB),
        ("4 MiB", 4 * MIB),
        (" 1gib ", GIB),
        ("1TiB", TIB),
        ("1KB", 1_000),
        ("1MB", 1_000_000),
        ("3gb", 3_000_000_000),
        ("16PiB", 16 << 50),
    ] {
        assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text:?}");
    }
    for text in ["", "abc", "MiB", "-1", "1.5GiB", "4 XB", "4MiBs", "0x10", "16EiB"] {
        assert!(matches!(text.parse::<ByteSize>(), Err(UnitError::Malformed { .. })), "{text:?}");
    }
    for text in ["16384PiB", "99999999TiB", "18446744073709551616"] {
        assert!(matches!(text.parse::<ByteSize>(), Err(UnitError::TooLarge { .. })), "{text:?}");
    }
    for (bytes, text) in [(0, "0B"), (1536, "1536B"), (256 * KIB, "256KiB"), (1_000_000, "1MB"), (TIB, "1TiB")] {
        assert_eq!(ByteSize(bytes).to_string(), text);
    }
    for bytes in [1, 999, 1000, 1024, 1_048_577, 5 * TIB, u64::MAX] {
        assert_eq!(ByteSize(bytes).to_string().parse(), Ok(ByteSize(bytes)), "{bytes}");
    }
}

#[test]
fn durations_parse_and_display() {
    let secs = Duration::from_secs;
    for (text, duration) in [
        ("30d", 30 * DAY),
        ("2w", 14 * DAY),
        ("1h", HOUR),
        ("90m", secs(5400)),
        ("1h30m", secs(5400)),
        ("1h 30m", secs(5400)),
        ("45s", secs(45)),
        ("500ms", Duration::from_millis(500)),
        ("0s", Duration::ZERO),
        ("7ns", Duration::from_nanos(7)),
    ] {
        assert_eq!(text.parse::<HumanDuration>(), Ok(HumanDuration(duration)), "{text:?}");
    }
    for text in ["", "30", "d", "3x", "1.5h", "-1s", "1H", "1h30", "h1"] {
        assert!(matches!(text.parse::<HumanDuration>(), Err(UnitError::Malformed { .. })), "{text:?}");
    }
    assert!(matches!("600000w".parse::<HumanDuration>(), Err(UnitError::TooLarge { .. })));
    for (duration, text) in [(30 * DAY, "30d"), (14 * DAY, "14d"), (secs(5400), "90m"), (Duration::ZERO, "0s")] {
        assert_eq!(HumanDuration(duration).to_string(), text);
    }
    for duration in [Duration::from_millis(1500), Duration::from_nanos(1), secs(86_401), Duration::from_nanos(u64::MAX)]
    {
        let text = HumanDuration(duration).to_string();
        assert_eq!(text.parse(), Ok(HumanDuration(duration)), "{text}");
    }
}

#[test]
fn to_toml_round_trips_through_parse() {
    let mut config = Config::default();
    assert_eq!(parse(&config.to_toml()).expect("defaults re-parse"), config);
    config.storage.chunk_avg = ByteSize(1_000_000);
    config.budget.credits_per_month = 0.1;
    config.market.renew_window = Duration::from_millis(1500);
    config.provider.data_dir = Some(PathBuf::from("/srv/pactfs data"));
    config.network.mode = NetworkMode::Market;
    config.network.bootstrap = vec!["/ip4/10.0.0.1/tcp/4701/p2p/12D3KooWExample".to_owned()];
    config.mount.allow_other = true;
    let text = config.to_toml();
    assert_eq!(parse(&text).expect("re-parses"), config, "{text}");
}

#[test]
fn to_json_uses_the_file_forms() {
    let json = Config::default().to_json();
    assert_eq!(json["storage"]["chunk_min"], "256KiB");
    assert_eq!(json["market"]["promise_duration"], "30d");
    assert_eq!(json["provider"]["data_dir"], "");
    assert_eq!(json["network"]["mode"], "hybrid");
    assert_eq!(json["budget"]["credits_per_month"], 1000.0);
}
