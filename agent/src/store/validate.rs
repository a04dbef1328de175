//! What every backend refuses before it writes or sends anything: keys outside
//! [`PREFIX`], and transactions etcd would refuse. Both backends call these, so code
//! written against the embedded store behaves the same on etcd.

use std::collections::HashSet;

use super::{PREFIX, StoreError, Txn, TxnOp};

/// A key must lie strictly under [`PREFIX`].
pub(super) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.len() > PREFIX.len() && key.starts_with(PREFIX) {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_string()))
    }
}

/// A prefix (range, watch, delete-prefix) may be [`PREFIX`] itself.
pub(super) fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.starts_with(PREFIX) {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(prefix.to_string()))
    }
}

/// Keys must be valid, and within one branch no key may be written twice — two puts,
/// or a put and a delete (of the key or of a prefix covering it), in either order.
/// etcd refuses such a txn ("duplicate key given in txn request").
pub(super) fn check_txn(txn: &Txn) -> Result<(), StoreError> {
    for c in &txn.compares {
        check_key(&c.key)?;
    }
    for ops in [&txn.success, &txn.failure] {
        let mut puts: HashSet<&str> = HashSet::new();
        for op in ops {
            if let TxnOp::Put { key, .. } = op {
                check_key(key)?;
                if !puts.insert(key) {
                    return Err(duplicate(key));
                }
            }
        }
        for op in ops {
            match op {
                TxnOp::Put { .. } => {}
                TxnOp::Get { key } => check_key(key)?,
                TxnOp::Delete { key } => {
                    check_key(key)?;
                    if puts.contains(key.as_str()) {
                        return Err(duplicate(key));
                    }
                }
                TxnOp::DeletePrefix { prefix } => {
                    check_prefix(prefix)?;
                    if let Some(put) = puts.iter().find(|p| p.starts_with(prefix.as_str())) {
                        return Err(duplicate(put));
                    }
                }
            }
        }
    }
    Ok(())
}

fn duplicate(key: &str) -> StoreError {
    StoreError::InvalidKey(format!("{key} (written twice in one txn branch)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> TxnOp {
        TxnOp::Put {
            key: k.into(),
            value: vec![],
            lease: None,
        }
    }

    fn refused(txn: &Txn) -> bool {
        matches!(check_txn(txn), Err(StoreError::InvalidKey(_)))
    }

    #[test]
    fn txn_validation_follows_etcd() {
        let ok = Txn::new().and_then([put("/strait/v1/a"), put("/strait/v1/b")]);
        assert!(check_txn(&ok).is_ok());
        assert!(refused(
            &Txn::new().and_then([put("/strait/v1/a"), put("/strait/v1/a")])
        ));
        // A delete before the put of the same key clashes as well as after it.
        assert!(refused(&Txn::new().or_else([
            TxnOp::Delete {
                key: "/strait/v1/a".into(),
            },
            put("/strait/v1/a"),
        ])));
        assert!(refused(&Txn::new().and_then([
            put("/strait/v1/p/a"),
            TxnOp::DeletePrefix {
                prefix: "/strait/v1/p/".into(),
            },
        ])));
        // The same key in different branches is fine.
        let branches = Txn::new()
            .and_then([put("/strait/v1/a")])
            .or_else([put("/strait/v1/a")]);
        assert!(check_txn(&branches).is_ok());
        assert!(refused(&Txn::new().and_then([TxnOp::Get {
            key: "/other".into(),
        }])));
        assert!(refused(
            &Txn::new().when([super::super::Compare::absent("/x")])
        ));
    }

    #[test]
    fn keys_and_prefixes() {
        assert!(check_key(PREFIX).is_err());
        assert!(check_key("/other").is_err());
        assert!(check_key("/strait/v1/a").is_ok());
        assert!(check_prefix(PREFIX).is_ok());
        assert!(check_prefix("/strait").is_err());
    }
}
