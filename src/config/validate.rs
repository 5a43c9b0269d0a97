//! The raw layer and its validation: serde reads the file into `Raw*`
//! structs, every key optional and spanned, and [`parse`] checks them once
//! into a [`Config`], pointing errors at the offending key or value.

use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fastcdc::v2020 as cdc;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::*;

/// Parses and validates one file's text; `origin` names it in errors.
pub(super) fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let checker = Checker { path: origin, text };
    let table = DeTable::parse(text).map_err(|err| checker.syntax(&err))?;
    let mut keys = Vec::new();
    index_keys(table.get_ref(), "", &mut keys);
    let raw = RawConfig::deserialize(toml::de::Deserializer::from(table)).map_err(|err| checker.serde(&err, &keys))?;
    raw.validate(&checker)
}

type Opt<T> = Option<Spanned<T>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a table of sections")]
struct RawConfig {
    storage: RawStorage,
    budget: RawBudget,
    market: RawMarket,
    provider: RawProvider,
    network: RawNetwork,
    mount: RawMount,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [storage] table")]
struct RawStorage {
    replication: Opt<i64>,
    chunk_min: Opt<ByteSize>,
    chunk_avg: Opt<ByteSize>,
    chunk_max: Opt<ByteSize>,
    cache_size: Opt<ByteSize>,
    capacity: Opt<ByteSize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [budget] table")]
struct RawBudget {
    credits_per_month: Opt<f64>,
    max_price_per_gib_month: Opt<f64>,
    max_retrieval_price: Opt<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [market] table")]
struct RawMarket {
    promise_duration: Opt<HumanDuration>,
    renew_window: Opt<HumanDuration>,
    audit_interval: Opt<HumanDuration>,
    min_reputation: Opt<f64>,
    explore_share: Opt<f64>,
    repair_grace: Opt<HumanDuration>,
    payment_interval: Opt<HumanDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [provider] table")]
struct RawProvider {
    enabled: Option<bool>,
    capacity: Opt<ByteSize>,
    data_dir: Opt<String>,
    price_per_gib_month: Opt<f64>,
    price_per_gib_retrieval: Opt<f64>,
    min_duration: Opt<HumanDuration>,
    max_duration: Opt<HumanDuration>,
    voluntary_capacity: Opt<ByteSize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [network] table")]
struct RawNetwork {
    mode: Option<NetworkMode>,
    listen: Option<Vec<Spanned<String>>>,
    bootstrap: Option<Vec<Spanned<String>>>,
    mdns: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [mount] table")]
struct RawMount {
    allow_other: Option<bool>,
}

/// A key's value from the file with the span of that value, or its default
/// with no span when the key is absent.
struct Field<T> {
    key: &'static str,
    value: T,
    span: Option<Range<usize>>,
}

impl<T> Field<T> {
    fn new(key: &'static str, raw: Opt<T>, default: fn() -> T) -> Self {
        match raw {
            Some(spanned) => Field { key, span: Some(spanned.span()), value: spanned.into_inner() },
            None => Field { key, value: default(), span: None },
        }
    }
}

/// Where a dotted key sits in the file, for naming the key of a serde error.
struct KeySpan {
    path: String,
    key: Range<usize>,
    value: Range<usize>,
}

/// Builds errors for one file: turns byte spans into line and column.
struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Checker<'_> {
    fn position(&self, span: Option<Range<usize>>) -> (usize, usize) {
        let Some(span) = span else { return (0, 0) };
        let before = self.text.get(..span.start).unwrap_or(self.text);
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
    }

    fn syntax(&self, err: &toml::de::Error) -> ConfigError {
        let (line, col) = self.position(err.span());
        ConfigError::Syntax { path: self.path.to_path_buf(), line, col, message: err.message().to_owned() }
    }

    fn invalid(&self, key: &str, span: Option<Range<usize>>, message: String) -> ConfigError {
        let (line, col) = self.position(span);
        ConfigError::Invalid { path: self.path.to_path_buf(), line, col, key: key.to_owned(), message }
    }

    /// Names the key a serde error is about: the deepest key whose name or
    /// value holds the error's position. An error on a key's name can only
    /// be `deny_unknown_fields` refusing it.
    fn serde(&self, err: &toml::de::Error, keys: &[KeySpan]) -> ConfigError {
        let Some(span) = err.span() else {
            return self.syntax(err);
        };
        let holds = |range: &Range<usize>| range.start <= span.start && span.start < range.end.max(range.start + 1);
        let found =
            keys.iter().filter(|entry| holds(&entry.key) || holds(&entry.value)).max_by_key(|entry| entry.path.len());
        let Some(entry) = found else {
            return self.syntax(err);
        };
        let message = if holds(&entry.key) {
            match err.message().find(", expected") {
                Some(at) => format!("unknown key;{}", &err.message()[at + 1..]),
                None => "unknown key".to_owned(),
            }
        } else {
            // serde names Rust types; the file has integers and numbers.
            err.message().replace("expected i64", "expected an integer").replace("expected f64", "expected a number")
        };
        self.invalid(&entry.path, Some(span), message)
    }

    fn ensure<T>(&self, ok: bool, field: &Field<T>, message: impl FnOnce() -> String) -> Result<(), ConfigError> {
        if ok { Ok(()) } else { Err(self.invalid(field.key, field.span.clone(), message())) }
    }

    /// An integer within `range`.
    fn count<T>(&self, field: &Field<i64>, range: RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: TryFrom<i64> + PartialOrd + fmt::Display,
    {
        match T::try_from(field.value) {
            Ok(count) if range.contains(&count) => Ok(count),
            _ => Err(self.invalid(
                field.key,
                field.span.clone(),
                format!("must be between {} and {}, got {}", range.start(), range.end(), field.value),
            )),
        }
    }

    /// A price or budget: a finite number, 0 or more.
    fn credits(&self, field: &Field<f64>) -> Result<f64, ConfigError> {
        let ok = field.value.is_finite() && field.value >= 0.0;
        self.ensure(ok, field, || format!("must be 0 or more credits, got {}", field.value))?;
        Ok(field.value)
    }

    /// A share or score: 0.0 to 1.0.
    fn fraction(&self, field: &Field<f64>) -> Result<f64, ConfigError> {
        let ok = (0.0..=1.0).contains(&field.value);
        self.ensure(ok, field, || format!("must be between 0.0 and 1.0, got {}", field.value))?;
        Ok(field.value)
    }

    fn positive(&self, field: &Field<HumanDuration>) -> Result<Duration, ConfigError> {
        self.ensure(!field.value.0.is_zero(), field, || "must be more than 0".to_owned())?;
        Ok(field.value.0)
    }

    /// One of fastcdc v2020's chunk-size bounds; fastcdc also wants them even.
    fn chunk_size(&self, field: &Field<ByteSize>, (low, high): (usize, usize)) -> Result<(), ConfigError> {
        // usize to u64 is lossless on every target pactfs builds for.
        let (low, high) = (ByteSize(low as u64), ByteSize(high as u64));
        let ok = (low..=high).contains(&field.value) && field.value.bytes().is_multiple_of(2);
        self.ensure(ok, field, || format!("must be an even size from {low} to {high}, got {}", field.value))
    }

    /// `first <= second` (`<` if `strict`), blaming `first` unless only
    /// `second` is in the file (two defaults never conflict).
    fn ordered<T: PartialOrd + fmt::Display>(
        &self,
        first: &Field<T>,
        second: &Field<T>,
        strict: bool,
    ) -> Result<(), ConfigError> {
        let ok = if strict { first.value < second.value } else { first.value <= second.value };
        let relation = if strict { "less than" } else { "at most" };
        let message =
            || format!("{} ({}) must be {relation} {} ({})", first.key, first.value, second.key, second.value);
        let blamed = if first.span.is_none() && second.span.is_some() { second } else { first };
        self.ensure(ok, blamed, message)
    }

    /// Multiaddr strings: `net` parses them, here only the obvious mistakes.
    fn addresses(
        &self,
        key: &'static str,
        raw: Option<Vec<Spanned<String>>>,
        default: fn() -> Vec<String>,
        must_contain: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(raw) = raw else { return Ok(default()) };
        raw.into_iter()
            .map(|address| {
                let field = Field { key, span: Some(address.span()), value: address.into_inner() };
                let ok = field.value.starts_with('/') && field.value.contains(must_contain);
                self.ensure(ok, &field, || {
                    format!("expected a multiaddr containing {must_contain:?}, got {:?}", field.value)
                })?;
                Ok(field.value)
            })
            .collect()
    }
}

impl RawConfig {
    fn validate(self, ck: &Checker) -> Result<Config, ConfigError> {
        Ok(Config {
            storage: self.storage.validate(ck)?,
            budget: self.budget.validate(ck)?,
            market: self.market.validate(ck)?,
            provider: self.provider.validate(ck)?,
            network: self.network.validate(ck)?,
            mount: MountConfig { allow_other: self.mount.allow_other.unwrap_or_else(default_allow_other) },
        })
    }
}

impl RawStorage {
    fn validate(self, ck: &Checker) -> Result<StorageConfig, ConfigError> {
        let replication = Field::new("storage.replication", self.replication, || i64::from(default_replication()));
        let replication = ck.count(&replication, 1..=MAX_REPLICATION)?;
        let chunk_min = Field::new("storage.chunk_min", self.chunk_min, default_chunk_min);
        let chunk_avg = Field::new("storage.chunk_avg", self.chunk_avg, default_chunk_avg);
        let chunk_max = Field::new("storage.chunk_max", self.chunk_max, default_chunk_max);
        ck.chunk_size(&chunk_min, (cdc::MINIMUM_MIN, cdc::MINIMUM_MAX))?;
        ck.chunk_size(&chunk_avg, (cdc::AVERAGE_MIN, cdc::AVERAGE_MAX))?;
        ck.chunk_size(&chunk_max, (cdc::MAXIMUM_MIN, cdc::MAXIMUM_MAX))?;
        ck.ordered(&chunk_min, &chunk_avg, false)?;
        ck.ordered(&chunk_avg, &chunk_max, false)?;
        let capacity = Field::new("storage.capacity", self.capacity, default_capacity);
        ck.ensure(capacity.value.bytes() > 0, &capacity, || "must be more than 0".to_owned())?;
        Ok(StorageConfig {
            replication,
            chunk_min: chunk_min.value,
            chunk_avg: chunk_avg.value,
            chunk_max: chunk_max.value,
            cache_size: Field::new("storage.cache_size", self.cache_size, default_cache_size).value,
            capacity: capacity.value,
        })
    }
}

impl RawBudget {
    fn validate(self, ck: &Checker) -> Result<BudgetConfig, ConfigError> {
        Ok(BudgetConfig {
            credits_per_month: ck.credits(&Field::new(
                "budget.credits_per_month",
                self.credits_per_month,
                default_credits_per_month,
            ))?,
            max_price_per_gib_month: ck.credits(&Field::new(
                "budget.max_price_per_gib_month",
                self.max_price_per_gib_month,
                default_max_price_per_gib_month,
            ))?,
            max_retrieval_price: ck.credits(&Field::new(
                "budget.max_retrieval_price",
                self.max_retrieval_price,
                default_max_retrieval_price,
            ))?,
        })
    }
}

impl RawMarket {
    fn validate(self, ck: &Checker) -> Result<MarketConfig, ConfigError> {
        let promise_duration = Field::new("market.promise_duration", self.promise_duration, default_promise_duration);
        let renew_window = Field::new("market.renew_window", self.renew_window, default_renew_window);
        let promise_duration_checked = ck.positive(&promise_duration)?;
        ck.ordered(&renew_window, &promise_duration, true)?;
        Ok(MarketConfig {
            promise_duration: promise_duration_checked,
            renew_window: renew_window.value.0,
            audit_interval: ck.positive(&Field::new(
                "market.audit_interval",
                self.audit_interval,
                default_audit_interval,
            ))?,
            min_reputation: ck.fraction(&Field::new(
                "market.min_reputation",
                self.min_reputation,
                default_min_reputation,
            ))?,
            explore_share: ck.fraction(&Field::new(
                "market.explore_share",
                self.explore_share,
                default_explore_share,
            ))?,
            repair_grace: Field::new("market.repair_grace", self.repair_grace, default_repair_grace).value.0,
            payment_interval: ck.positive(&Field::new(
                "market.payment_interval",
                self.payment_interval,
                default_payment_interval,
            ))?,
        })
    }
}

impl RawProvider {
    fn validate(self, ck: &Checker) -> Result<ProviderConfig, ConfigError> {
        let enabled = self.enabled.unwrap_or_else(default_provider_enabled);
        let capacity = Field::new("provider.capacity", self.capacity, default_provider_capacity);
        ck.ensure(!enabled || capacity.value.bytes() > 0, &capacity, || {
            "must be more than 0 when the provider is enabled".to_owned()
        })?;
        let data_dir = Field::new("provider.data_dir", self.data_dir, String::new);
        // A relative path would depend on the directory pactfs starts in.
        ck.ensure(data_dir.value.is_empty() || Path::new(&data_dir.value).is_absolute(), &data_dir, || {
            format!("must be an absolute path or \"\", got {:?}", data_dir.value)
        })?;
        let min_duration = Field::new("provider.min_duration", self.min_duration, default_min_duration);
        let max_duration = Field::new("provider.max_duration", self.max_duration, default_max_duration);
        let max_checked = ck.positive(&max_duration)?;
        ck.ordered(&min_duration, &max_duration, false)?;
        Ok(ProviderConfig {
            enabled,
            min_duration: min_duration.value.0,
            max_duration: max_checked,
            capacity: capacity.value,
            voluntary_capacity: Field::new("provider.voluntary_capacity", self.voluntary_capacity, || ByteSize(0))
                .value,
            data_dir: Some(PathBuf::from(data_dir.value)).filter(|dir| !dir.as_os_str().is_empty()),
            price_per_gib_month: ck.credits(&Field::new(
                "provider.price_per_gib_month",
                self.price_per_gib_month,
                default_price_per_gib_month,
            ))?,
            price_per_gib_retrieval: ck.credits(&Field::new(
                "provider.price_per_gib_retrieval",
                self.price_per_gib_retrieval,
                default_price_per_gib_retrieval,
            ))?,
        })
    }
}

impl RawNetwork {
    fn validate(self, ck: &Checker) -> Result<NetworkConfig, ConfigError> {
        Ok(NetworkConfig {
            mode: self.mode.unwrap_or_default(),
            listen: ck.addresses("network.listen", self.listen, default_listen, "/")?,
            bootstrap: ck.addresses("network.bootstrap", self.bootstrap, Vec::new, "/p2p/")?,
            mdns: self.mdns.unwrap_or_else(default_mdns),
        })
    }
}

/// Records every dotted key of `table` with the spans of its name and value.
fn index_keys(table: &DeTable<'_>, prefix: &str, out: &mut Vec<KeySpan>) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        if let DeValue::Table(inner) = value.get_ref() {
            index_keys(inner, &path, out);
        }
        out.push(KeySpan { path, key: key.span(), value: value.span() });
    }
}
