//! Seals MCP session state into session ids ([`tessera_proxy::resume`]) with the store's
//! keyring, so a session opened on one replica can be resumed on another. Record-bound: the
//! associated data names the purpose, so no other sealed value (a credential, a provider
//! token) opens as session state or the reverse.

use std::sync::Arc;

use secrecy::ExposeSecret as _;
use tessera_proxy::resume::SessionSealer;
use tessera_store::{Aad, Keyring};

pub(crate) struct KeyringSessionSealer {
    pub(crate) keyring: Arc<Keyring>,
}

fn aad() -> Aad {
    Aad::new("mcp-session")
}

impl SessionSealer for KeyringSessionSealer {
    fn seal(&self, plaintext: &[u8]) -> Option<String> {
        self.keyring.seal(plaintext, &aad()).ok()
    }

    fn open(&self, sealed: &str) -> Option<Vec<u8>> {
        self.keyring
            .open(sealed, &aad())
            .ok()
            .map(|plain| plain.expose_secret().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_store::SealingKey;

    fn sealer(byte: u8) -> KeyringSessionSealer {
        let key = SealingKey::from_bytes(&[byte; 32]).unwrap();
        KeyringSessionSealer {
            keyring: Arc::new(Keyring::new(key, vec![]).unwrap()),
        }
    }

    #[test]
    fn state_opens_with_the_same_key_only_and_ids_stay_header_safe() {
        let a = sealer(1);
        let sealed = a.seal(br#"{"v":1}"#).unwrap();
        assert!(
            sealed.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "{sealed}"
        );
        assert_eq!(a.open(&sealed).unwrap(), br#"{"v":1}"#);
        assert!(sealer(2).open(&sealed).is_none());
        // A credential sealed with the same key does not open as session state.
        let other = a
            .keyring
            .seal(b"token", &Aad::credential("u", "s"))
            .unwrap();
        assert!(a.open(&other).is_none());
    }
}
