//! stub, replaced by the simulator
#![allow(dead_code, unused_variables, missing_docs)]
use std::net::SocketAddr;
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub addr: SocketAddr,
}
#[derive(Debug, Clone)]
pub struct Config;
impl Config {
    pub fn samples() -> Config {
        Config
    }
}
pub struct Sandbox {
    addr: SocketAddr,
}
impl Sandbox {
    pub async fn start(addr: SocketAddr, config: Config) -> std::io::Result<Sandbox> {
        Ok(Sandbox { addr })
    }
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
pub async fn serve(args: Args) -> anyhow::Result<()> {
    Ok(())
}
