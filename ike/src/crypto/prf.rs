//! The pseudo-random functions (HMAC-SHA2, RFC 4868) and prf+ (RFC 7296 §2.13).

use ring::hmac;

use super::Secret;
use super::suite::{PRF_HMAC_SHA2_256, PRF_HMAC_SHA2_384};
use crate::codec::{Transform, transform_type};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    HmacSha256,
    HmacSha384,
}

impl Prf {
    pub fn id(self) -> u16 {
        match self {
            Prf::HmacSha256 => PRF_HMAC_SHA2_256,
            Prf::HmacSha384 => PRF_HMAC_SHA2_384,
        }
    }

    pub fn from_id(id: u16) -> Option<Prf> {
        match id {
            PRF_HMAC_SHA2_256 => Some(Prf::HmacSha256),
            PRF_HMAC_SHA2_384 => Some(Prf::HmacSha384),
            _ => None,
        }
    }

    pub fn transform(self) -> Transform {
        Transform::new(transform_type::PRF, self.id())
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Prf::HmacSha256 => hmac::HMAC_SHA256,
            Prf::HmacSha384 => hmac::HMAC_SHA384,
        }
    }

    /// The output length, which is also the preferred key length (SK_d, SK_p*).
    pub fn output_len(self) -> usize {
        match self {
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
        }
    }

    /// prf(key, data) over the concatenation of `data`.
    pub fn prf(self, key: &[u8], data: &[&[u8]]) -> Secret {
        let key = hmac::Key::new(self.algorithm(), key);
        let mut ctx = hmac::Context::with_key(&key);
        for d in data {
            ctx.update(d);
        }
        Secret::new(ctx.sign().as_ref().to_vec())
    }

    /// prf+(key, seed) truncated to `len` bytes: T1 = prf(K, S | 0x01),
    /// Tn = prf(K, Tn-1 | S | n). At most 255 blocks (§2.13).
    pub fn prf_plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Secret {
        assert!(
            len <= 255 * self.output_len(),
            "prf+ asked for more than 255 blocks"
        );
        let mut out = Vec::with_capacity(len + self.output_len());
        let mut prev = Secret::new(Vec::new());
        let mut n = 1u8;
        while out.len() < len {
            let mut data: Vec<&[u8]> = vec![prev.expose()];
            data.extend_from_slice(seed);
            let counter = [n];
            data.push(&counter);
            prev = self.prf(key, &data);
            out.extend_from_slice(prev.expose());
            n = n.wrapping_add(1);
        }
        out.truncate(len);
        Secret::new(out)
    }
}
