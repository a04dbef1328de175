//! Values in the query strings of the agent's API, percent-encoded: RFC 3986's
//! unreserved characters stay, everything else (`&`, `=`, `/`, space, ...) is escaped,
//! so no value can end its parameter early.

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
