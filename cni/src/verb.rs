//! [`Verb`]: the CNI operation (`CNI_COMMAND`), named apart from the environment that
//! carries it so [`crate::error`] can say which verb failed without importing
//! [`crate::env`], which reports its own failures as [`crate::error::CniError`].
//!
//! Reading the verb from `CNI_COMMAND` (with code 4 for an unknown one) and the
//! variables each verb requires are the environment's: `Verb::parse` is in
//! [`crate::env`].

/// A CNI operation (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Add,
    Del,
    Check,
    Status,
    Version,
    Gc,
}

impl Verb {
    /// Every verb, in the spec's order.
    pub const ALL: [Verb; 6] = [
        Verb::Add,
        Verb::Del,
        Verb::Check,
        Verb::Status,
        Verb::Version,
        Verb::Gc,
    ];

    /// The verb the spec spells `command`; commands are upper case in the spec and
    /// every runtime sends them so: anything else is no verb rather than a guess.
    pub fn from_command(command: &str) -> Option<Self> {
        Some(match command {
            "ADD" => Verb::Add,
            "DEL" => Verb::Del,
            "CHECK" => Verb::Check,
            "STATUS" => Verb::Status,
            "VERSION" => Verb::Version,
            "GC" => Verb::Gc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
            Verb::Status => "STATUS",
            Verb::Version => "VERSION",
            Verb::Gc => "GC",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_text_round_trips() {
        for verb in Verb::ALL {
            assert_eq!(Verb::from_command(verb.as_str()), Some(verb));
        }
        assert_eq!(Verb::from_command("add"), None);
        assert_eq!(Verb::from_command(""), None);
    }
}
