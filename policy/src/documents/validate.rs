//! The syntax Kubernetes requires of names, label keys and values, and port names
//! (`k8s.io/apimachinery/pkg/util/validation`), with its messages, so a refusal reads
//! as the API server's would. Each check returns why the string is refused.

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const PORT_NAME_MAX: usize = 15;

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(lower_alnum)
        && s.ends_with(lower_alnum)
        && s.chars().all(|c| lower_alnum(c) || c == '-')
}

/// A namespace's name.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > DNS1123_LABEL_MAX {
        return Err(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_dns1123_label(s) {
        return Err(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric \
                    characters or '-', and must start and end with an alphanumeric character \
                    (e.g. 'my-name', or '123-abc')"
                .into(),
        );
    }
    Ok(())
}

/// A policy's name; the prefix of a label key.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if !s.split('.').all(is_dns1123_label) {
        return Err(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                    characters, '-' or '.', and must start and end with an alphanumeric \
                    character (e.g. 'example.com')"
                .into(),
        );
    }
    Ok(())
}

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`: a label key's name part and a label value.
fn is_qualified_part(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// A label key (`app`, `app.kubernetes.io/name`), an annotation key.
pub fn qualified_name(s: &str) -> Result<(), String> {
    const SHAPE: &str = "a qualified name must consist of alphanumeric characters, '-', '_' \
                         or '.', and must start and end with an alphanumeric character (e.g. \
                         'MyName', or 'my.name', or '123-abc'), with an optional DNS subdomain \
                         prefix and '/' (e.g. 'example.com/MyName')";
    let name = match s.split_once('/') {
        None => s,
        Some((_, name)) if name.contains('/') => return Err(SHAPE.into()),
        Some((prefix, name)) => {
            if prefix.is_empty() {
                return Err("prefix part must be non-empty".into());
            }
            dns1123_subdomain(prefix).map_err(|e| format!("prefix part {e}"))?;
            name
        }
    };
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if name.len() > QUALIFIED_NAME_MAX {
        return Err(format!(
            "name part must be no more than {QUALIFIED_NAME_MAX} characters"
        ));
    }
    if !is_qualified_part(name) {
        return Err(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and \
                    must start and end with an alphanumeric character (e.g. 'MyName', or \
                    'my.name', or '123-abc')"
                .into(),
        );
    }
    Ok(())
}

/// A label value: empty, or up to 63 characters of the qualified name's shape.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.len() > LABEL_VALUE_MAX {
        return Err(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !s.is_empty() && !is_qualified_part(s) {
        return Err(
            "a valid label must be an empty string or consist of alphanumeric \
                    characters, '-', '_' or '.', and must start and end with an \
                    alphanumeric character (e.g. 'MyValue', or 'my_value', or '12345')"
                .into(),
        );
    }
    Ok(())
}

/// A named port (IANA_SVC_NAME, RFC 6335): what `containerPort.name` may be.
pub fn port_name(s: &str) -> Result<(), String> {
    if s.len() > PORT_NAME_MAX {
        return Err(format!("must be no more than {PORT_NAME_MAX} characters"));
    }
    if !s.chars().all(|c| lower_alnum(c) || c == '-') {
        return Err(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into(),
        );
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        return Err("must contain at least one letter (a-z)".into());
    }
    if s.contains("--") {
        return Err("must not contain consecutive hyphens".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must not begin or end with a hyphen".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123() {
        for ok in ["a", "web", "my-ns", "123-abc", &"a".repeat(63)] {
            assert_eq!(dns1123_label(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(dns1123_label(bad).is_err(), "{bad}");
        }
        for ok in ["web", "web.v1", "a-b.c-d", "0.0"] {
            assert_eq!(dns1123_subdomain(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "Web", "a_b", &"a".repeat(254)] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_are_qualified_names() {
        for ok in ["app", "App_1", "a.b-c", "app.kubernetes.io/name", "x/Y"] {
            assert_eq!(qualified_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            qualified_name("/app"),
            Err("prefix part must be non-empty".into())
        );
        assert_eq!(
            qualified_name("example.com/"),
            Err("name part must be non-empty".into())
        );
        assert!(
            qualified_name("Example.com/app")
                .unwrap_err()
                .starts_with("prefix part")
        );
        assert!(qualified_name("a/b/c").is_err());
        assert!(
            qualified_name("-app")
                .unwrap_err()
                .starts_with("name part must consist")
        );
        assert!(qualified_name(&"a".repeat(64)).unwrap_err().contains("63"));
        assert!(qualified_name("").is_err());
    }

    #[test]
    fn label_values() {
        for ok in ["", "v1", "my_value", "1.0", &"a".repeat(63)] {
            assert_eq!(label_value(ok), Ok(()), "{ok}");
        }
        for bad in ["-v", "v-", "a b", "a/b", &"a".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_names_are_iana_service_names() {
        for ok in ["http", "web-80", "a", "h2c", "x".repeat(15).as_str()] {
            assert_eq!(port_name(ok), Ok(()), "{ok}");
        }
        assert!(port_name(&"x".repeat(16)).unwrap_err().contains("15"));
        assert!(port_name("Http").unwrap_err().contains("alpha-numeric"));
        assert_eq!(
            port_name("80"),
            Err("must contain at least one letter (a-z)".into())
        );
        assert_eq!(
            port_name("a--b"),
            Err("must not contain consecutive hyphens".into())
        );
        assert_eq!(
            port_name("-ab"),
            Err("must not begin or end with a hyphen".into())
        );
        assert!(port_name("").is_err());
    }
}
