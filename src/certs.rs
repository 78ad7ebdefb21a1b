//! PLACEHOLDER owned by the server work: replaced by rcgen certificate generation.
use clap::Args;

#[derive(Debug, Args)]
pub struct CertsArgs {}

pub fn run(_args: CertsArgs) -> anyhow::Result<()> {
    anyhow::bail!("certs is not built yet")
}
