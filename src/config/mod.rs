//! The one TOML configuration file: its keys, their defaults, and validation
//! with errors that name the file, line, column and key.
//!
//! Start at [`Config::load`]. The text is parsed once into a spanned toml
//! table, deserialized into private `Raw*` structs (every key optional,
//! unknown keys refused) and then checked once into [`Config`]. The rest of
//! the crate only ever sees the validated [`Config`]. [`DEFAULT_CONFIG_TOML`]
//! is the commented file `pactfs init` writes.
//!
//! Sizes are [`ByteSize`] and read "256KiB", "1MB" or a plain byte count;
//! durations are [`std::time::Duration`] and read "30d", "1h30m", "500ms"
//! (see [`HumanDuration`]). This module reads no environment variables and
//! never resolves paths against the current directory.

#[cfg(test)]
mod tests;
mod units;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

pub use units::{ByteSize, HumanDuration, UnitError};
use units::{DAY, GIB, HOUR, KIB, MIB, TIB};

/// The file `pactfs init` writes: every key at its default, with its unit.
/// `Config::parse` of this text equals `Config::default()` (tested).
pub const DEFAULT_CONFIG_TOML: &str = r#"# pactfs configuration. Every key is optional: a missing key takes the
# default shown here, and an unknown key is an error.
# Sizes: "512B", "256KiB", "4MiB", "1GiB", "1TiB" (or KB, MB, GB, TB for
# powers of ten, or a plain byte count). Durations: "500ms", "45s", "90m",
# "1h", "3d", "2w", or combined as "1h30m".

[storage]
# Distinct providers that hold each chunk (count, 1 to 16).
replication = 3
# Smallest chunk the chunker cuts, except at the end of a file (size).
chunk_min = "256KiB"
# Average chunk size the chunker aims for (size).
chunk_avg = "1MiB"
# Largest chunk the chunker cuts (size).
chunk_max = "4MiB"
# Local cache: placed chunks beyond this are evicted, pending ones never (size).
cache_size = "10GiB"
# Drive size that df reports (size, more than 0).
capacity = "1TiB"

[budget]
# Credits the market agent may spend per month (credits, 0 or more).
credits_per_month = 1000
# Highest storage price accepted (credits per GiB-month, 0 or more).
max_price_per_gib_month = 5
# Highest retrieval price accepted (credits per GiB, 0 or more).
max_retrieval_price = 2

[market]
# How long one storage promise lasts (duration).
promise_duration = "30d"
# Renew a promise this long before it expires (duration, below promise_duration).
renew_window = "3d"
# Time between audits of one promise (duration, more than 0).
audit_interval = "1h"
# Lowest reputation a provider may have to win a bid (0.0 to 1.0).
min_reputation = 0.5
# Share of bids kept for providers with no record yet (0.0 to 1.0).
explore_share = 0.1
# How long a provider may be unreachable before its chunks are repaired (duration).
repair_grace = "1h"
# How often providers are paid what their promises earned (duration, more than 0).
payment_interval = "1d"

[provider]
# Sell storage and retrieval to other nodes (true or false).
enabled = false
# Space offered to clients (size, more than 0 when enabled).
capacity = "100GiB"
# Where provided chunks are kept (absolute path; "" means under the pactfs home).
data_dir = ""
# Asking price for storage (credits per GiB-month, 0 or more).
price_per_gib_month = 1
# Asking price for retrieval (credits per GiB, 0 or more).
price_per_gib_retrieval = 0.5
# Shortest promise sold (duration, at most max_duration).
min_duration = "1h"
# Longest promise sold (duration, more than 0).
max_duration = "365d"
# Room for extra copies of chunks other providers serve often, kept of this
# provider's own accord and offered for retrieval (size; "0B" keeps none).
voluntary_capacity = "0B"

[network]
# "hybrid" (Kademlia DHT plus market) or "market" (no DHT).
mode = "hybrid"
# Multiaddrs to listen on (list of strings, each starting with "/").
listen = ["/ip4/0.0.0.0/tcp/4701", "/ip4/0.0.0.0/udp/4701/quic-v1"]
# Peers to dial at start (list of multiaddrs, each with "/p2p/<peer id>").
bootstrap = []
# Find peers on the local network with mDNS (true or false).
mdns = false

[mount]
# Let other users into the mount; the kernel enforces file permissions (true or false).
allow_other = false
"#;

/// Largest replication target: each replica is a separate promise to pay for
/// and to audit, and more than this buys nothing a user would notice.
pub const MAX_REPLICATION: u32 = 16;

/// The validated configuration, as [`Config::load`] and [`Config::parse`]
/// return it: every value is within the range its field documents. Code that
/// builds one by hand (tests) must keep to those ranges.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Config {
    pub storage: StorageConfig,
    pub budget: BudgetConfig,
    pub market: MarketConfig,
    pub provider: ProviderConfig,
    pub network: NetworkConfig,
    pub mount: MountConfig,
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    ///
    /// # Errors
    ///
    /// `Io` if the file cannot be read: a missing file is `Io` with
    /// `io::ErrorKind::NotFound`, and whether that means "use the defaults"
    /// is the caller's choice. Otherwise as [`Config::parse`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`. `origin` only names the file in errors.
    ///
    /// # Errors
    ///
    /// `Syntax` if `text` is not TOML; `Invalid` for an unknown key, a
    /// wrong type or a value out of range, with the key and its position.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        validate::parse(text, origin)
    }

    /// The effective configuration as TOML: every key, no comments.
    /// `Config::parse` of the result gives back `self`.
    pub fn to_toml(&self) -> String {
        // Every field is a string, number, bool or list of strings: toml
        // cannot refuse any of them.
        toml::to_string(self).expect("Config always serializes to TOML")
    }

    /// The effective configuration as JSON, with the same keys and value
    /// forms as the TOML file (sizes and durations as strings).
    pub fn to_json(&self) -> serde_json::Value {
        // Only strings, finite numbers, bools and lists: cannot fail.
        serde_json::to_value(self).expect("Config always serializes to JSON")
    }
}

/// `[storage]`: how files are cut into chunks, replicated and cached.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StorageConfig {
    /// Distinct providers that must hold a chunk before it counts as placed.
    /// Count, 1 to [`MAX_REPLICATION`]; default 3.
    pub replication: u32,
    /// Smallest chunk fastcdc cuts (a file's last chunk may be shorter).
    /// Bytes, within fastcdc v2020's limits and even; default 256 KiB.
    pub chunk_min: ByteSize,
    /// Average chunk size fastcdc aims for. Bytes, `chunk_min..=chunk_max`;
    /// default 1 MiB.
    pub chunk_avg: ByteSize,
    /// Largest chunk fastcdc cuts. Bytes; default 4 MiB.
    pub chunk_max: ByteSize,
    /// Local chunk cache: placed chunks beyond it are evicted, pending chunks
    /// never are. Bytes; default 10 GiB.
    pub cache_size: ByteSize,
    /// Drive size reported to `statfs` (what `df` shows). Bytes, more than 0;
    /// default 1 TiB.
    pub capacity: ByteSize,
}

/// `[budget]`: what the market agent may spend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetConfig {
    /// Spending cap per month. Credits, 0 or more; default 1000.
    pub credits_per_month: f64,
    /// Highest storage price a bid offers. Credits per GiB-month, 0 or more;
    /// default 5.
    pub max_price_per_gib_month: f64,
    /// Highest retrieval price accepted. Credits per GiB, 0 or more; default 2.
    pub max_retrieval_price: f64,
}

/// `[market]`: promise terms and provider selection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MarketConfig {
    /// Lifetime of one storage promise. More than 0; default 30 days.
    #[serde(serialize_with = "serialize_duration")]
    pub promise_duration: Duration,
    /// Renewal starts this long before a promise expires. Less than
    /// `promise_duration`; default 3 days.
    #[serde(serialize_with = "serialize_duration")]
    pub renew_window: Duration,
    /// Time between two audits of one promise. More than 0; default 1 hour.
    #[serde(serialize_with = "serialize_duration")]
    pub audit_interval: Duration,
    /// Lowest reputation a provider needs to win a bid. 0.0 to 1.0; default 0.5.
    pub min_reputation: f64,
    /// Share of bids kept for providers with no record yet. 0.0 to 1.0;
    /// default 0.1.
    pub explore_share: f64,
    /// How long a provider may be unreachable before its chunks are
    /// repaired elsewhere. Default 1 hour.
    #[serde(serialize_with = "serialize_duration")]
    pub repair_grace: Duration,
    /// Time between two payments to a provider. More than 0; default 1 day.
    #[serde(serialize_with = "serialize_duration")]
    pub payment_interval: Duration,
}

/// `[provider]`: selling this node's disk and bandwidth.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProviderConfig {
    /// Whether this node sells storage at all. Default false.
    pub enabled: bool,
    /// Space offered to clients. Bytes, more than 0 when enabled; default 100 GiB.
    pub capacity: ByteSize,
    /// Where provided chunks live. Absolute; `None` (written `""`) means a
    /// directory under the pactfs home, which the caller picks. Default `None`.
    #[serde(serialize_with = "serialize_data_dir")]
    pub data_dir: Option<PathBuf>,
    /// Asking price for storage. Credits per GiB-month, 0 or more; default 1.
    pub price_per_gib_month: f64,
    /// Asking price for retrieval. Credits per GiB, 0 or more; default 0.5.
    pub price_per_gib_retrieval: f64,
    /// Shortest promise sold. At most `max_duration`; default 1 hour.
    #[serde(serialize_with = "serialize_duration")]
    pub min_duration: Duration,
    /// Longest promise sold. More than 0; default 365 days.
    #[serde(serialize_with = "serialize_duration")]
    pub max_duration: Duration,
    /// Room for voluntary copies of chunks served often elsewhere, offered
    /// for retrieval. Bytes, 0 (the default) keeps none.
    pub voluntary_capacity: ByteSize,
}

/// `[network]`: libp2p transports and peer discovery.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetworkConfig {
    /// Whether a Kademlia DHT runs beside the market. Default hybrid.
    pub mode: NetworkMode,
    /// Multiaddrs to listen on, each starting with `/`; parsed by `net`.
    /// Default TCP and QUIC on port 4701, all IPv4 interfaces.
    pub listen: Vec<String>,
    /// Peers dialled at start, each a multiaddr with `/p2p/<peer id>`.
    /// Default none.
    pub bootstrap: Vec<String>,
    /// Discover peers on the local network with mDNS. Default false.
    pub mdns: bool,
}

/// `[mount]`: FUSE mount options.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MountConfig {
    /// Let other users into the mount (the kernel still enforces file
    /// permissions). Default false.
    pub allow_other: bool,
}

/// `network.mode`, written `"hybrid"` or `"market"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A Kademlia DHT locates peers, asks and data; the market still decides
    /// placement and price.
    #[default]
    Hybrid,
    /// No DHT: peers, asks and data are found through the market alone.
    Market,
}

/// Why a configuration was refused. `Display` gives `path:line:col: key:
/// message` (`line` and `col` are 1-based and left out when unknown).
#[derive(thiserror::Error, Debug)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8). Nothing
    /// was parsed.
    #[error("cannot read {}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Not valid TOML (including a key or table defined twice). `line` and
    /// `col` point at the offending text, 0 if toml gave no position.
    #[error("{}: {message}", location(path, *line, *col))]
    Syntax { path: PathBuf, line: usize, col: usize, message: String },
    /// Valid TOML, but `key` (dotted, e.g. `storage.chunk_min`) is unknown,
    /// has the wrong type or an out-of-range value. `line` and `col` point at
    /// the value (at the key itself when it is unknown); a range error always
    /// names a key that is in the file, since the defaults are consistent.
    #[error("{}: {key}: {message}", location(path, *line, *col))]
    Invalid { path: PathBuf, line: usize, col: usize, key: String, message: String },
}

impl ConfigError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Io { path, .. } | ConfigError::Syntax { path, .. } | ConfigError::Invalid { path, .. } => path,
        }
    }

    /// 1-based line of the offending text, if known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Syntax { line, .. } | ConfigError::Invalid { line, .. } => {
                Some(*line).filter(|line| *line > 0)
            }
        }
    }

    /// 1-based column (in characters) of the offending text, if known.
    pub fn col(&self) -> Option<usize> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Syntax { line, col, .. } | ConfigError::Invalid { line, col, .. } => {
                Some(*col).filter(|_| *line > 0)
            }
        }
    }

    /// The dotted key that was refused, for `Invalid` only.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Io { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            replication: default_replication(),
            chunk_min: default_chunk_min(),
            chunk_avg: default_chunk_avg(),
            chunk_max: default_chunk_max(),
            cache_size: default_cache_size(),
            capacity: default_capacity(),
        }
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            credits_per_month: default_credits_per_month(),
            max_price_per_gib_month: default_max_price_per_gib_month(),
            max_retrieval_price: default_max_retrieval_price(),
        }
    }
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            promise_duration: default_promise_duration().0,
            renew_window: default_renew_window().0,
            audit_interval: default_audit_interval().0,
            min_reputation: default_min_reputation(),
            explore_share: default_explore_share(),
            repair_grace: default_repair_grace().0,
            payment_interval: default_payment_interval().0,
        }
    }
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            enabled: default_provider_enabled(),
            capacity: default_provider_capacity(),
            data_dir: None,
            price_per_gib_month: default_price_per_gib_month(),
            price_per_gib_retrieval: default_price_per_gib_retrieval(),
            min_duration: default_min_duration().0,
            max_duration: default_max_duration().0,
            voluntary_capacity: ByteSize(0),
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            mode: NetworkMode::default(),
            listen: default_listen(),
            bootstrap: Vec::new(),
            mdns: default_mdns(),
        }
    }
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig { allow_other: default_allow_other() }
    }
}

fn default_replication() -> u32 {
    3
}
fn default_chunk_min() -> ByteSize {
    ByteSize(256 * KIB)
}
fn default_chunk_avg() -> ByteSize {
    ByteSize(MIB)
}
fn default_chunk_max() -> ByteSize {
    ByteSize(4 * MIB)
}
fn default_cache_size() -> ByteSize {
    ByteSize(10 * GIB)
}
fn default_capacity() -> ByteSize {
    ByteSize(TIB)
}
fn default_credits_per_month() -> f64 {
    1000.0
}
fn default_max_price_per_gib_month() -> f64 {
    5.0
}
fn default_max_retrieval_price() -> f64 {
    2.0
}
fn default_promise_duration() -> HumanDuration {
    HumanDuration(30 * DAY)
}
fn default_renew_window() -> HumanDuration {
    HumanDuration(3 * DAY)
}
fn default_audit_interval() -> HumanDuration {
    HumanDuration(HOUR)
}
fn default_min_reputation() -> f64 {
    0.5
}
fn default_explore_share() -> f64 {
    0.1
}
fn default_repair_grace() -> HumanDuration {
    HumanDuration(HOUR)
}
fn default_payment_interval() -> HumanDuration {
    HumanDuration(DAY)
}
fn default_min_duration() -> HumanDuration {
    HumanDuration(HOUR)
}
fn default_max_duration() -> HumanDuration {
    HumanDuration(365 * DAY)
}
fn default_provider_enabled() -> bool {
    false
}
fn default_provider_capacity() -> ByteSize {
    ByteSize(100 * GIB)
}
fn default_price_per_gib_month() -> f64 {
    1.0
}
fn default_price_per_gib_retrieval() -> f64 {
    0.5
}
fn default_listen() -> Vec<String> {
    vec!["/ip4/0.0.0.0/tcp/4701".to_owned(), "/ip4/0.0.0.0/udp/4701/quic-v1".to_owned()]
}
fn default_mdns() -> bool {
    false
}
fn default_allow_other() -> bool {
    false
}

fn serialize_duration<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&HumanDuration(*duration))
}

fn serialize_data_dir<S: Serializer>(dir: &Option<PathBuf>, serializer: S) -> Result<S::Ok, S::Error> {
    match dir {
        Some(dir) => serializer.serialize_str(&dir.to_string_lossy()),
        None => serializer.serialize_str(""),
    }
}

fn location(path: &Path, line: usize, col: usize) -> String {
    if line == 0 { path.display().to_string() } else { format!("{}:{line}:{col}", path.display()) }
}
