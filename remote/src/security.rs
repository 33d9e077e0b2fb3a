//! How a connection to the broker is secured: `curve` (encrypted and authenticated by key
//! pair, RFC 26), `plain` (identity and token in cleartext, for loopback and migration) or
//! `none`. Owns the key files: `keygen` writes a secret key (Z85, mode 0600) and its public
//! half (`<secret>.pub`, 0644); a secret key file holds only the secret, whose public half is
//! derived again when loaded, so the two can never disagree. [`curve_available`] is the
//! start-up check that libzmq was built with CURVE (libsodium).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A connection's security mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    /// CURVE: encrypted, peers identified by their public key.
    Curve,
    /// PLAIN: identity and token, both (and every payload) in cleartext.
    Plain,
    /// No authentication, no encryption.
    None,
}

impl Mechanism {
    /// The lowercase name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Curve => "curve",
            Mechanism::Plain => "plain",
            Mechanism::None => "none",
        }
    }
}

impl FromStr for Mechanism {
    type Err = SecurityError;
    fn from_str(s: &str) -> Result<Mechanism, SecurityError> {
        match s {
            "curve" => Ok(Mechanism::Curve),
            "plain" => Ok(Mechanism::Plain),
            "none" => Ok(Mechanism::None),
            other => Err(SecurityError::Invalid(format!(
                "security {other:?}: use curve, plain or none"
            ))),
        }
    }
}

/// Security failures (key files, key text, missing CURVE support).
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// libzmq lacks CURVE.
    #[error(
        "security = \"curve\" needs libzmq with CURVE, and this build has none: rebuild \
         triggerd with libsodium-dev installed (scripts/deps installs it), or set \
         security = \"plain\" (cleartext) for now"
    )]
    NoCurve,
    /// A key file could not be read or written.
    #[error("{0}: {1}")]
    File(PathBuf, std::io::Error),
    /// A key is malformed.
    #[error("{0}")]
    Invalid(String),
    /// ZeroMQ failed.
    #[error("zmq: {0}")]
    Zmq(#[from] zmq::Error),
}

/// Whether this libzmq can do CURVE.
pub fn curve_available() -> Result<(), SecurityError> {
    match zmq::has("curve") {
        Some(true) => Ok(()),
        _ => Err(SecurityError::NoCurve),
    }
}

/// A 32-byte CURVE key.
pub type Key = [u8; 32];

/// Decodes a Z85 key (40 characters).
pub fn decode_key(text: &str) -> Result<Key, SecurityError> {
    let text = text.trim();
    let bad = || SecurityError::Invalid(format!("not a Z85 CURVE key (40 characters): {text:?}"));
    if text.len() != 40 {
        return Err(bad());
    }
    let bytes = zmq::z85_decode(text).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

/// Encodes a key as Z85 text.
pub fn encode_key(key: &Key) -> String {
    zmq::z85_encode(key).expect("32 bytes are a multiple of 4")
}

/// A host's (or the broker's) key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// Public half (may be shown and registered anywhere).
    pub public: Key,
    /// Secret half (never leaves the host).
    pub secret: Key,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair {{ public: {} }}", encode_key(&self.public))
    }
}

// libzmq's own function, linked through `zmq-sys` (which does not re-export it).
extern "C" {
    fn zmq_curve_public(public: *mut libc::c_char, secret: *const libc::c_char) -> libc::c_int;
}

/// The public key of `secret`.
fn public_of(secret: &Key) -> Result<Key, SecurityError> {
    let secret_text = std::ffi::CString::new(encode_key(secret)).expect("Z85 has no NUL");
    let mut public = [0u8; 41];
    // SAFETY: zmq_curve_public writes 40 Z85 characters and a NUL into `public` (41 bytes)
    // and reads a NUL-terminated 40-character Z85 secret; both buffers outlive the call.
    let rc = unsafe { zmq_curve_public(public.as_mut_ptr().cast(), secret_text.as_ptr()) };
    if rc != 0 {
        return Err(SecurityError::NoCurve);
    }
    let text = std::str::from_utf8(&public[..40])
        .map_err(|_| SecurityError::Invalid("libzmq returned a non-Z85 key".into()))?;
    decode_key(text)
}

impl KeyPair {
    /// A new random key pair.
    pub fn generate() -> Result<KeyPair, SecurityError> {
        curve_available()?;
        let pair = zmq::CurveKeyPair::new()?;
        Ok(KeyPair {
            public: pair.public_key,
            secret: pair.secret_key,
        })
    }

    /// Loads a secret key file (Z85 text) and derives its public half.
    pub fn load(path: &Path) -> Result<KeyPair, SecurityError> {
        curve_available()?;
        let text =
            std::fs::read_to_string(path).map_err(|e| SecurityError::File(path.into(), e))?;
        let secret = decode_key(&text)
            .map_err(|e| SecurityError::Invalid(format!("{}: {e}", path.display())))?;
        Ok(KeyPair {
            public: public_of(&secret)?,
            secret,
        })
    }

    /// Writes the secret to `path` (0600, refusing to overwrite an existing key) and the public
    /// half to [`public_path`]`(path)`.
    pub fn save(&self, path: &Path) -> Result<(), SecurityError> {
        let failed = |e| SecurityError::File(path.into(), e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(failed)?;
        writeln!(file, "{}", encode_key(&self.secret)).map_err(failed)?;
        let public = public_path(path);
        std::fs::write(&public, format!("{}\n", encode_key(&self.public)))
            .map_err(|e| SecurityError::File(public, e))
    }
}

/// Where the public half of the secret key file `secret` is written: `<secret>.pub`.
pub fn public_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

/// What a client or worker presents to the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No mechanism (a broker with `security = "none"`).
    #[default]
    None,
    /// PLAIN: identity name and token.
    Plain {
        /// Identity name registered at the broker.
        identity: String,
        /// Its token.
        token: String,
    },
    /// CURVE: the broker's public key and this host's key pair.
    Curve {
        /// The broker's public key.
        server: Key,
        /// This host's key pair (its public half is registered at the broker).
        host: KeyPair,
    },
}

impl Credentials {
    /// A DEALER towards the broker presenting these credentials (not yet connected): no
    /// linger, deep queues (the broker's ROUTER drops nothing on its side either).
    pub fn dealer(&self, ctx: &zmq::Context) -> Result<zmq::Socket, zmq::Error> {
        let socket = ctx.socket(zmq::DEALER)?;
        socket.set_linger(0)?;
        socket.set_sndhwm(1_000_000)?;
        socket.set_rcvhwm(1_000_000)?;
        self.apply(&socket)?;
        Ok(socket)
    }

    /// Sets up `socket` (before connecting) to present these credentials.
    pub fn apply(&self, socket: &zmq::Socket) -> Result<(), zmq::Error> {
        match self {
            Credentials::None => Ok(()),
            Credentials::Plain { identity, token } => {
                socket.set_plain_username(Some(identity))?;
                socket.set_plain_password(Some(token))
            }
            Credentials::Curve { server, host } => {
                socket.set_curve_serverkey(server)?;
                socket.set_curve_publickey(&host.public)?;
                socket.set_curve_secretkey(&host.secret)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_writes_a_private_secret_whose_public_half_is_derived_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/host.key");
        let pair = KeyPair::generate().expect("libzmq has CURVE");
        pair.save(&path).expect("save");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(KeyPair::load(&path).expect("load"), pair);
        let public = std::fs::read_to_string(public_path(&path)).expect("public");
        assert_eq!(decode_key(&public).expect("z85"), pair.public);
        assert!(
            pair.save(&path).is_err(),
            "an existing key is never overwritten"
        );
        assert!(decode_key("short").is_err());
        assert!(!format!("{pair:?}").contains(&encode_key(&pair.secret)));
    }
}
