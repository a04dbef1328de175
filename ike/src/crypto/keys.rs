//! The key schedule: SKEYSEED and the IKE SA's keys (RFC 7296 §2.14), the rekeyed
//! SKEYSEED (§2.18) and Child SA key material with and without PFS (§2.17).

use super::Secret;
use super::prf::Prf;
use super::suite::Cipher;

/// The keys of one IKE SA. With an AEAD cipher there are no SK_a* keys.
#[derive(Debug, Clone)]
pub struct IkeKeys {
    pub sk_d: Secret,
    pub sk_ei: Secret,
    pub sk_er: Secret,
    pub sk_pi: Secret,
    pub sk_pr: Secret,
}

fn split(prf: Prf, cipher: Cipher, keymat: &Secret) -> IkeKeys {
    let (p, e) = (prf.output_len(), cipher.keymat_len());
    let k = keymat.expose();
    let take = |at: usize, n: usize| Secret::new(k[at..at + n].to_vec());
    IkeKeys {
        sk_d: take(0, p),
        sk_ei: take(p, e),
        sk_er: take(p + e, e),
        sk_pi: take(p + 2 * e, p),
        sk_pr: take(2 * p + 2 * e, p),
    }
}

fn expand(
    prf: Prf,
    cipher: Cipher,
    skeyseed: &Secret,
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> IkeKeys {
    let len = 3 * prf.output_len() + 2 * cipher.keymat_len();
    let keymat = prf.prf_plus(
        skeyseed.expose(),
        &[ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()],
        len,
    );
    split(prf, cipher, &keymat)
}

impl IkeKeys {
    /// §2.14: SKEYSEED = prf(Ni | Nr, g^ir), then prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
    pub fn derive(
        prf: Prf,
        cipher: Cipher,
        g_ir: &Secret,
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> IkeKeys {
        let key = [ni, nr].concat();
        let skeyseed = prf.prf(&key, &[g_ir.expose()]);
        expand(prf, cipher, &skeyseed, ni, nr, spi_i, spi_r)
    }

    /// §2.18: the new IKE SA of a rekey. SKEYSEED = prf(SK_d (old), g^ir (new) | Ni |
    /// Nr) with the old SA's PRF; the keys expand with the new SA's PRF, nonces and
    /// SPIs (SPIi is the rekey initiator's).
    #[allow(clippy::too_many_arguments)]
    pub fn rekey(
        &self,
        old_prf: Prf,
        prf: Prf,
        cipher: Cipher,
        g_ir: &Secret,
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> IkeKeys {
        let skeyseed = old_prf.prf(self.sk_d.expose(), &[g_ir.expose(), ni, nr]);
        expand(prf, cipher, &skeyseed, ni, nr, spi_i, spi_r)
    }

    /// §2.17: the key material of a Child SA, KEYMAT = prf+(SK_d, [g^ir (new) |] Ni |
    /// Nr), where Ni and Nr are the nonces of the exchange that made it and the
    /// initiator is that exchange's initiator.
    pub fn child(
        &self,
        prf: Prf,
        cipher: Cipher,
        g_ir: Option<&Secret>,
        ni: &[u8],
        nr: &[u8],
    ) -> ChildKeys {
        let n = cipher.keymat_len();
        let mut seed: Vec<&[u8]> = Vec::new();
        if let Some(g) = g_ir {
            seed.push(g.expose());
        }
        seed.extend([ni, nr]);
        let keymat = prf.prf_plus(self.sk_d.expose(), &seed, 2 * n);
        let k = keymat.expose();
        ChildKeys {
            initiator_to_responder: Secret::new(k[..n].to_vec()),
            responder_to_initiator: Secret::new(k[n..2 * n].to_vec()),
        }
    }
}

/// ESP key || salt in each direction of a Child SA (RFC 4106 §8.1: no integrity key
/// with AES-GCM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildKeys {
    pub initiator_to_responder: Secret,
    pub responder_to_initiator: Secret,
}
