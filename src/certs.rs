//! TLS material for the webhook: a private CA and a serving certificate signed by it.
//!
//! `serve` calls [`ensure`] so that a fresh checkout starts without any setup; `certs`
//! writes the same files for a cluster install (to put in a Secret) and prints the
//! `caBundle` for the webhook configuration. File names follow a Kubernetes TLS Secret
//! (`tls.crt`, `tls.key`, `ca.crt`), so a mounted Secret or a cert-manager Certificate can
//! replace the generated files without any flag.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const TLS_CERT_FILE: &str = "tls.crt";
pub const TLS_KEY_FILE: &str = "tls.key";

/// Names every serving certificate carries, so a local `serve` answers curl out of the box
/// (`localhost` resolves to `::1` first on many machines).
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Backdating absorbs clock skew between this machine and the API server.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Folder to write ca.crt, ca.key, tls.crt and tls.key into.
    #[arg(long, env = "SPARK_ADMISSION_CERTS_OUT", default_value = "certs")]
    pub out: PathBuf,
    /// DNS names (or IPs) for the serving certificate besides localhost and 127.0.0.1,
    /// e.g. spark-admission.spark-admission.svc; repeat the flag or separate with commas.
    #[arg(
        long = "dns",
        value_name = "NAME",
        env = "SPARK_ADMISSION_DNS",
        value_delimiter = ',',
        num_args = 1..
    )]
    pub dns: Vec<String>,
    /// Replace files that already exist in the folder.
    #[arg(long, env = "SPARK_ADMISSION_CERTS_FORCE")]
    pub force: bool,
    /// Issue a new serving certificate from the CA already in the folder (ca.crt, ca.key),
    /// replacing tls.crt and tls.key: the caBundle stays the same.
    #[arg(long, env = "SPARK_ADMISSION_CERTS_RENEW", conflicts_with = "force")]
    pub renew: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("cannot generate a certificate")]
    Generate(#[source] rcgen::Error),
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("{0} already exists (pass --force to replace it)")]
    Exists(String),
    #[error("{present} exists but {missing} does not: provide both or neither")]
    Incomplete { present: String, missing: String },
    #[error("no serving certificate in {dir} ({TLS_CERT_FILE} and {TLS_KEY_FILE}), and generation is off (--generate-certs=false): mount the TLS Secret there")]
    Missing { dir: String },
    #[error("{path} is not a usable {what}: {reason}")]
    Invalid {
        path: String,
        what: &'static str,
        reason: String,
    },
}

// Causes stay `source()`: the binary prints the whole chain (anyhow's `{:#}`), and logs
// use `ErrorChain`.
impl From<rcgen::Error> for CertsError {
    fn from(e: rcgen::Error) -> Self {
        CertsError::Generate(e)
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CertsError + '_ {
    move |error| CertsError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// Where the four files of a certificate folder are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

impl CertPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            ca_cert: dir.join(CA_CERT_FILE),
            ca_key: dir.join(CA_KEY_FILE),
            tls_cert: dir.join(TLS_CERT_FILE),
            tls_key: dir.join(TLS_KEY_FILE),
            dir,
        }
    }
}

/// PEM text of a CA and a serving certificate.
#[derive(Debug, Clone)]
pub struct Material {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub tls_cert_pem: String,
    pub tls_key_pem: String,
}

/// What [`ensure`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// tls.crt and tls.key were there already and are used as they are.
    Existing,
    /// A CA was there: a new serving certificate was issued from it.
    IssuedFromCa,
    /// Nothing was there: a CA and a serving certificate were generated.
    Generated,
}

/// [`DEFAULT_NAMES`] and the extra names, without duplicates, in that order.
pub fn subject_names(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| (*s).to_owned()).collect();
    for n in extra {
        let n = n.trim();
        if !n.is_empty() && !names.iter().any(|m| m == n) {
            names.push(n.to_owned());
        }
    }
    names
}

/// A new CA and a serving certificate for [`subject_names`]`(dns)`.
pub fn generate(dns: &[String]) -> Result<Material, CertsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "spark-admission CA");
    ca.distinguished_name
        .push(DnType::OrganizationName, "spark-admission");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut ca, CA_VALIDITY);
    let ca_cert_pem = ca.self_signed(&ca_key)?.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);
    let (tls_cert_pem, tls_key_pem) = issue(&issuer, dns)?;
    Ok(Material {
        ca_cert_pem,
        ca_key_pem,
        tls_cert_pem,
        tls_key_pem,
    })
}

/// A serving certificate and its key (PEM) signed by an existing CA.
pub fn issue_from_ca(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    dns: &[String],
) -> Result<(String, String), CertsError> {
    let key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, key)?;
    issue(&issuer, dns)
}

fn issue(issuer: &Issuer<'_, KeyPair>, dns: &[String]) -> Result<(String, String), CertsError> {
    let names = subject_names(dns);
    let common_name = names
        .iter()
        .rev()
        .find(|n| n.parse::<std::net::IpAddr>().is_err())
        .cloned()
        .unwrap_or_else(|| "localhost".to_owned());
    let mut leaf = CertificateParams::new(names)?;
    leaf.distinguished_name
        .push(DnType::CommonName, common_name.as_str());
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    set_validity(&mut leaf, SERVING_VALIDITY);
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = SystemTime::now();
    params.not_before = now.checked_sub(BACKDATE).unwrap_or(now).into();
    params.not_after = (now + validity).into();
}

/// Makes sure `dir` holds a serving certificate: keeps tls.crt/tls.key when present,
/// else issues one from ca.crt/ca.key when present, else generates everything.
pub fn ensure(dir: &Path, dns: &[String]) -> Result<Ensured, CertsError> {
    let paths = CertPaths::new(dir);
    if pair_state(&paths.tls_cert, &paths.tls_key)? {
        return Ok(Ensured::Existing);
    }
    if pair_state(&paths.ca_cert, &paths.ca_key)? {
        let ca_cert = read_text(&paths.ca_cert)?;
        let ca_key = read_text(&paths.ca_key)?;
        let (cert, key) =
            issue_from_ca(&ca_cert, &ca_key, dns).map_err(|e| CertsError::Invalid {
                path: paths.ca_cert.display().to_string(),
                what: "CA (certificate and key)",
                reason: crate::error_chain::ErrorChain(&e).to_string(),
            })?;
        write_file(&paths.tls_key, key.as_bytes(), true)?;
        write_file(&paths.tls_cert, cert.as_bytes(), false)?;
        return Ok(Ensured::IssuedFromCa);
    }
    let material = generate(dns)?;
    write_material(dir, &material)?;
    Ok(Ensured::Generated)
}

/// Like [`ensure`] without generating anything: tls.crt and tls.key must be in `dir`
/// (a mounted Secret). Replicas that each generated their own pair would serve
/// certificates the webhook's caBundle does not trust.
pub fn require(dir: &Path) -> Result<Ensured, CertsError> {
    let paths = CertPaths::new(dir);
    if pair_state(&paths.tls_cert, &paths.tls_key)? {
        Ok(Ensured::Existing)
    } else {
        Err(CertsError::Missing {
            dir: dir.display().to_string(),
        })
    }
}

/// Both files present: true; neither: false; one of them: an error.
fn pair_state(a: &Path, b: &Path) -> Result<bool, CertsError> {
    match (a.exists(), b.exists()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => Err(CertsError::Incomplete {
            present: a.display().to_string(),
            missing: b.display().to_string(),
        }),
        (false, true) => Err(CertsError::Incomplete {
            present: b.display().to_string(),
            missing: a.display().to_string(),
        }),
    }
}

fn read_text(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(io_error(path))
}

/// Writes the four files into `dir` (created if needed); keys are readable by the owner only.
pub fn write_material(dir: &Path, m: &Material) -> Result<CertPaths, CertsError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let paths = CertPaths::new(dir);
    write_file(&paths.ca_key, m.ca_key_pem.as_bytes(), true)?;
    write_file(&paths.ca_cert, m.ca_cert_pem.as_bytes(), false)?;
    // Key before certificate: a server polling the folder never pairs a new certificate
    // with the old key for longer than one poll, and it keeps the old pair meanwhile.
    write_file(&paths.tls_key, m.tls_key_pem.as_bytes(), true)?;
    write_file(&paths.tls_cert, m.tls_cert_pem.as_bytes(), false)?;
    Ok(paths)
}

/// A new serving pair from the existing CA; the key is written first so that a reader
/// polling the pair sees at worst the new key with the old certificate for one poll
/// (a mismatch the server rejects, keeping the old pair), never a half-written file.
fn renew(paths: &CertPaths, dns: &[String]) -> Result<(), CertsError> {
    let ca_cert = read_text(&paths.ca_cert)?;
    let ca_key = read_text(&paths.ca_key)?;
    let (cert, key) = issue_from_ca(&ca_cert, &ca_key, dns)?;
    write_file(&paths.tls_key, key.as_bytes(), true)?;
    write_file(&paths.tls_cert, cert.as_bytes(), false)?;
    eprintln!(
        "renewed {} and {} from {} for {}",
        paths.tls_cert.display(),
        paths.tls_key.display(),
        paths.ca_cert.display(),
        subject_names(dns).join(", ")
    );
    println!("{}", ca_bundle(ca_cert.as_bytes()));
    Ok(())
}

/// Writes through a temporary file and a rename, so readers never see half a file.
///
/// The temporary file has a unique name in the same folder (the rename stays on one file
/// system), created exclusively, so neither a leftover file nor a second writer can share
/// it: each writer renames its own complete file, and the last one wins. Its mode is set
/// explicitly (0600 for keys, 0644 otherwise), not inherited from anything on disk nor
/// left to the umask.
pub fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_error(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_error(tmp.path()))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    tmp.write_all(contents).map_err(io_error(path))?;
    tmp.as_file().sync_all().map_err(io_error(path))?;
    // On any error above, dropping `tmp` removes the temporary file.
    tmp.persist(path).map_err(|e| CertsError::Io {
        path: path.display().to_string(),
        error: e.error,
    })?;
    Ok(())
}

/// The `caBundle` of a webhook configuration: the CA certificate PEM, base64-encoded.
pub fn ca_bundle(ca_cert_pem: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca_cert_pem)
}

/// `spark-admission certs`: writes a CA and a serving certificate and prints the caBundle
/// on standard output (the only thing printed there, so scripts can capture it).
pub fn run(args: CertsArgs) -> Result<(), CertsError> {
    let paths = CertPaths::new(&args.out);
    if args.renew {
        return renew(&paths, &args.dns);
    }
    if !args.force {
        for p in [
            &paths.ca_cert,
            &paths.ca_key,
            &paths.tls_cert,
            &paths.tls_key,
        ] {
            if p.exists() {
                return Err(CertsError::Exists(p.display().to_string()));
            }
        }
    }
    let material = generate(&args.dns)?;
    let paths = write_material(&args.out, &material)?;
    eprintln!(
        "wrote {}, {}, {} and {} for {}",
        paths.ca_cert.display(),
        paths.ca_key.display(),
        paths.tls_cert.display(),
        paths.tls_key.display(),
        subject_names(&args.dns).join(", ")
    );
    // ca.key stays out of the cluster: only the serving pair and the CA certificate go in.
    eprintln!(
        "create the Secret with: kubectl create secret generic spark-admission-tls --from-file={} --from-file={} --from-file={}",
        paths.tls_cert.display(),
        paths.tls_key.display(),
        paths.ca_cert.display()
    );
    eprintln!("caBundle for the webhook configuration:");
    println!("{}", ca_bundle(material.ca_cert_pem.as_bytes()));
    Ok(())
}
