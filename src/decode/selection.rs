//! Which attribute decoders are enabled (`-deserializers`), and the
//! `idiag_ext` request bits they need.
//!
//! The request asks the kernel only for what will be decoded: every extra
//! attribute costs the kernel time and us bytes.

use std::fmt;

/// One attribute decoder, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Deserializer {
    Info,
    Cong,
    Meminfo,
    Skmem,
    Bbr,
    Dctcp,
    Vegas,
    Tos,
    Tc,
    Shut,
    Classid,
    Cgroup,
    Sockopt,
}

impl Deserializer {
    pub const ALL: [Deserializer; 13] = [
        Deserializer::Info,
        Deserializer::Cong,
        Deserializer::Meminfo,
        Deserializer::Skmem,
        Deserializer::Bbr,
        Deserializer::Dctcp,
        Deserializer::Vegas,
        Deserializer::Tos,
        Deserializer::Tc,
        Deserializer::Shut,
        Deserializer::Classid,
        Deserializer::Cgroup,
        Deserializer::Sockopt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Deserializer::Info => "info",
            Deserializer::Cong => "cong",
            Deserializer::Meminfo => "meminfo",
            Deserializer::Skmem => "skmem",
            Deserializer::Bbr => "bbr",
            Deserializer::Dctcp => "dctcp",
            Deserializer::Vegas => "vegas",
            Deserializer::Tos => "tos",
            Deserializer::Tc => "tc",
            Deserializer::Shut => "shut",
            Deserializer::Classid => "classid",
            Deserializer::Cgroup => "cgroup",
            Deserializer::Sockopt => "sockopt",
        }
    }

    /// The `idiag_ext` bit (attribute number - 1) the kernel needs to send
    /// this attribute, or 0 for attributes it sends unconditionally
    /// (CGROUP_ID, SOCKOPT).
    fn request_bits(self) -> u8 {
        match self {
            Deserializer::Meminfo => 1 << 0,
            Deserializer::Info => 1 << 1,
            // VEGASINFO's bit gates every congestion-control info attribute:
            // the kernel answers with the one of the socket's algorithm.
            Deserializer::Vegas | Deserializer::Dctcp | Deserializer::Bbr => 1 << 2,
            Deserializer::Cong => 1 << 3,
            Deserializer::Tos => 1 << 4,
            // CLASS_ID has no bit of its own (its number is past the u8);
            // the kernel sends it when TCLASS is asked for.
            Deserializer::Tc | Deserializer::Classid => 1 << 5,
            Deserializer::Skmem => 1 << 6,
            Deserializer::Shut => 1 << 7,
            Deserializer::Cgroup | Deserializer::Sockopt => 0,
        }
    }
}

/// The set of enabled decoders.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Deserializers(u16);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown deserializer {name:?}; valid: default, all, \"\" (none), or a comma list of {valid}")]
pub struct UnknownDeserializer {
    pub name: String,
    pub valid: String,
}

impl Deserializers {
    pub const NONE: Deserializers = Deserializers(0);

    pub fn all() -> Self {
        Deserializer::ALL.iter().fold(Self::NONE, |s, d| s.with(*d))
    }

    /// Everything but `meminfo`, which duplicates `skmem`.
    pub fn default_set() -> Self {
        Self::all().without(Deserializer::Meminfo)
    }

    pub fn with(self, d: Deserializer) -> Self {
        Deserializers(self.0 | (1 << d as u8))
    }

    pub fn without(self, d: Deserializer) -> Self {
        Deserializers(self.0 & !(1 << d as u8))
    }

    #[inline]
    pub fn contains(self, d: Deserializer) -> bool {
        self.0 & (1 << d as u8) != 0
    }

    /// The `idiag_ext` byte of the dump request.
    pub fn request_ext(self) -> u8 {
        Deserializer::ALL
            .iter()
            .filter(|d| self.contains(**d))
            .fold(0, |ext, d| ext | d.request_bits())
    }

    /// Parses `default`, `all`, `""` or a comma list of names.
    pub fn parse(spec: &str) -> Result<Self, UnknownDeserializer> {
        match spec.trim() {
            "default" => return Ok(Self::default_set()),
            "all" => return Ok(Self::all()),
            _ => {}
        }
        let mut set = Self::NONE;
        for name in spec.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let d = Deserializer::ALL
                .iter()
                .find(|d| d.name() == name)
                .ok_or_else(|| UnknownDeserializer {
                    name: name.to_string(),
                    valid: Deserializer::ALL.map(|d| d.name()).join(","),
                })?;
            set = set.with(*d);
        }
        Ok(set)
    }
}

impl fmt::Debug for Deserializers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = Deserializer::ALL
            .iter()
            .filter(|d| self.contains(**d))
            .map(|d| d.name())
            .collect();
        write!(f, "Deserializers({})", names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Named sets and lists map to the documented request bytes.
    #[test]
    fn request_ext_matches_the_kernel_bits() {
        assert_eq!(Deserializers::parse("default").unwrap().request_ext(), 0xFE);
        assert_eq!(Deserializers::parse("all").unwrap().request_ext(), 0xFF);
        assert_eq!(Deserializers::parse("").unwrap().request_ext(), 0);
        assert_eq!(Deserializers::parse("meminfo,skmem").unwrap().request_ext(), 0x41);
        assert_eq!(Deserializers::parse("bbr").unwrap().request_ext(), 0x04);
        assert_eq!(Deserializers::parse("classid").unwrap().request_ext(), 0x20);
        assert_eq!(Deserializers::parse("cgroup,sockopt").unwrap().request_ext(), 0);
    }

    /// An unknown name is rejected with the list of valid names.
    #[test]
    fn unknown_name_is_a_clear_error() {
        let err = Deserializers::parse("info,bogus").unwrap_err();
        assert_eq!(err.name, "bogus");
        assert!(err.to_string().contains("info,cong,meminfo"), "{err}");
    }
}
