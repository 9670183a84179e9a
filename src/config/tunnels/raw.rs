//! The tunnels file exactly as written: serde structs that reject unknown keys and keep the
//! position of every value that the validation pass checks, so its errors can name the line.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    /// `[defaults]`: settings every tunnel inherits.
    #[serde(default)]
    pub defaults: Option<Spanned<RawSettings>>,
    /// `[[tunnel]]` tables, in file order.
    #[serde(default)]
    pub tunnel: Vec<Spanned<RawTunnel>>,
}

/// Connection settings: the whole of `[defaults]`, and the part of a tunnel it may override.
///
/// Deliberately repeated field by field in [`RawTunnel`] (see there why not flattened).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    pub user: Option<Spanned<String>>,
    pub identity: Option<Spanned<StringList>>,
    pub known_hosts: Option<Spanned<String>>,
    pub host_key_checking: Option<Spanned<String>>,
    pub keepalive_interval: Option<Spanned<TimeValue>>,
    pub keepalive_count: Option<Spanned<u32>>,
    pub connect_timeout: Option<Spanned<TimeValue>>,
    pub compression: Option<bool>,
    pub backoff_initial: Option<Spanned<TimeValue>>,
    pub backoff_max: Option<Spanned<TimeValue>>,
    pub exit_after_failures: Option<u32>,
    pub resume: Option<bool>,
    pub resume_grace: Option<Spanned<TimeValue>>,
    pub ssh_config: Option<Spanned<String>>,
    pub jump: Option<Spanned<String>>,
    pub options: Option<Vec<Spanned<String>>>,
    pub proxy_protocol: Option<Spanned<String>>,
}

/// One `[[tunnel]]`: what it connects to and forwards, plus any setting of `[defaults]`.
///
/// The settings are repeated here rather than `#[serde(flatten)]`ed: flatten disables
/// `deny_unknown_fields` and loses the value spans. [`RawTunnel::split`] keeps the two lists
/// honest: a key added to [`RawSettings`] but not here makes it fail to compile. So the
/// settings half of this struct is parallel to [`RawSettings`] on purpose.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTunnel {
    pub name: Option<Spanned<String>>,
    pub server: Option<Spanned<String>>,
    pub servers: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub local: Vec<Spanned<String>>,
    #[serde(default)]
    pub remote: Vec<Spanned<RemoteItem>>,
    #[serde(default)]
    pub dynamic: Vec<Spanned<String>>,

    pub user: Option<Spanned<String>>,
    pub identity: Option<Spanned<StringList>>,
    pub known_hosts: Option<Spanned<String>>,
    pub host_key_checking: Option<Spanned<String>>,
    pub keepalive_interval: Option<Spanned<TimeValue>>,
    pub keepalive_count: Option<Spanned<u32>>,
    pub connect_timeout: Option<Spanned<TimeValue>>,
    pub compression: Option<bool>,
    pub backoff_initial: Option<Spanned<TimeValue>>,
    pub backoff_max: Option<Spanned<TimeValue>>,
    pub exit_after_failures: Option<u32>,
    pub resume: Option<bool>,
    pub resume_grace: Option<Spanned<TimeValue>>,
    pub ssh_config: Option<Spanned<String>>,
    pub jump: Option<Spanned<String>>,
    pub options: Option<Vec<Spanned<String>>>,
    pub proxy_protocol: Option<Spanned<String>>,
}

/// The tunnel-only keys of a [`RawTunnel`].
pub(super) struct RawTarget {
    pub name: Option<Spanned<String>>,
    pub server: Option<Spanned<String>>,
    pub servers: Option<Spanned<Vec<Spanned<String>>>>,
    pub local: Vec<Spanned<String>>,
    pub remote: Vec<Spanned<RemoteItem>>,
    pub dynamic: Vec<Spanned<String>>,
}

impl RawTunnel {
    /// Separates what the tunnel connects to from its settings.
    pub fn split(self) -> (RawTarget, RawSettings) {
        let target = RawTarget {
            name: self.name,
            server: self.server,
            servers: self.servers,
            local: self.local,
            remote: self.remote,
            dynamic: self.dynamic,
        };
        let settings = RawSettings {
            user: self.user,
            identity: self.identity,
            known_hosts: self.known_hosts,
            host_key_checking: self.host_key_checking,
            keepalive_interval: self.keepalive_interval,
            keepalive_count: self.keepalive_count,
            connect_timeout: self.connect_timeout,
            compression: self.compression,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
            exit_after_failures: self.exit_after_failures,
            resume: self.resume,
            resume_grace: self.resume_grace,
            ssh_config: self.ssh_config,
            jump: self.jump,
            options: self.options,
            proxy_protocol: self.proxy_protocol,
        };
        (target, settings)
    }
}

/// One `remote` entry: a spec (`"8080:localhost:80"`), or a table with the spec and settings
/// of that forward alone (`{ forward = "8080:localhost:80", proxy_protocol = "v2" }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RemoteItem {
    /// The -R spec.
    pub forward: String,
    /// This forward's `proxy_protocol` as written, if set.
    pub proxy_protocol: Option<String>,
}

impl AsRef<str> for RemoteItem {
    fn as_ref(&self) -> &str {
        &self.forward
    }
}

impl<'de> Deserialize<'de> for RemoteItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = RemoteItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a remote forward spec, or a table { forward = \"spec\", proxy_protocol = \"v1\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RemoteItem, E> {
                Ok(RemoteItem {
                    forward: v.to_owned(),
                    proxy_protocol: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RemoteItem, A::Error> {
                let (mut forward, mut proxy_protocol) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "forward" if forward.is_none() => forward = Some(map.next_value()?),
                        "proxy_protocol" if proxy_protocol.is_none() => {
                            proxy_protocol = Some(map.next_value()?)
                        }
                        "forward" | "proxy_protocol" => {
                            return Err(de::Error::duplicate_field("forward or proxy_protocol"))
                        }
                        other => return Err(de::Error::unknown_field(other, REMOTE_ITEM_KEYS)),
                    }
                }
                Ok(RemoteItem {
                    forward: forward.ok_or_else(|| de::Error::missing_field("forward"))?,
                    proxy_protocol,
                })
            }
        }
        d.deserialize_any(ItemVisitor)
    }
}

/// The keys of a `remote` entry written as a table.
pub(super) const REMOTE_ITEM_KEYS: &[&str] = &["forward", "proxy_protocol"];

/// A time as written: an integer (seconds) or an OpenSSH time string (`"5s"`, `"1h30m"`).
/// Kept as text; the validation pass parses it so the error can name the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TimeValue(pub String);

impl<'de> Deserialize<'de> for TimeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TimeVisitor;
        impl Visitor<'_> for TimeVisitor {
            type Value = TimeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a time: seconds (5) or a string like \"5s\", \"1m\", \"1h30m\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeValue, E> {
                Ok(TimeValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeValue, E> {
                Ok(TimeValue(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TimeValue, E> {
                Ok(TimeValue(v.to_owned()))
            }
        }
        d.deserialize_any(TimeVisitor)
    }
}

/// A string or a list of strings (`identity = "k"` or `identity = ["k1", "k2"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(StringList(items))
            }
        }
        d.deserialize_any(ListVisitor)
    }
}
