//! Arguments of privileged operations that are checked before anything runs: interface
//! names (`IfName`) and the error every such check returns. A leaf: `nat`, `privileged` and
//! `helper` all use it.

/// An argument refused before anything was run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {why}")]
pub struct InvalidArg {
    /// Which argument.
    pub what: &'static str,
    /// Its value.
    pub value: String,
    /// Why it is refused.
    pub why: &'static str,
}

impl InvalidArg {
    /// `value` refused as `what` because `why`.
    pub fn new(
        what: &'static str,
        value: &(impl std::fmt::Display + ?Sized),
        why: &'static str,
    ) -> Self {
        InvalidArg {
            what,
            value: value.to_string(),
            why,
        }
    }
}

/// A Linux interface name: 1–15 of `[A-Za-z0-9_.-]`, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IfName(String);

impl IfName {
    /// Checks `name` (called `what` in the error).
    pub fn new(what: &'static str, name: &str) -> Result<Self, InvalidArg> {
        let invalid = |why| Err(InvalidArg::new(what, name, why));
        if name.is_empty() || name.len() > 15 {
            return invalid("must be 1 to 15 characters");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return invalid("may only contain letters, digits, '-', '_' and '.'");
        }
        if name == "." || name == ".." {
            return invalid("is reserved");
        }
        Ok(IfName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a Linux interface name (see [`IfName`]).
pub fn validate_ifname(what: &'static str, name: &str) -> Result<(), InvalidArg> {
    IfName::new(what, name).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ifname_rules() {
        for ok in ["br-fc", "bt-0123456789ab", "eth0", "a.b_c"] {
            assert_eq!(IfName::new("x", ok).unwrap().as_str(), ok);
        }
        for bad in ["", "0123456789abcdef", "a b", "a/b", ".", ".."] {
            let e = IfName::new("tap name", bad).unwrap_err();
            assert_eq!(e.what, "tap name");
        }
    }
}
