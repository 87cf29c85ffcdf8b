//! How a process joins a group: its rank, the rendezvous address, timeouts, the backend.

use std::time::Duration;

use crate::error::DdpError;

/// The collective backend of a process group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// Gloo, for CPU tensors (the default).
    #[default]
    Gloo,
    /// NCCL, for CUDA tensors; available when this crate is built with its `cuda` feature against a
    /// libtorch with CUDA ([`nccl_available`](crate::nccl_available)).
    Nccl,
}

/// Where Gloo opens its sockets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GlooDevice {
    /// Loopback when the rendezvous address is a loopback address (every rank is on this machine),
    /// else Gloo's default: the address this machine's host name resolves to (loopback when it does
    /// not resolve).
    #[default]
    Auto,
    /// One device per named network interface (what `GLOO_SOCKET_IFNAME=eth0,eth1` selects).
    Interfaces(Vec<String>),
    /// A device bound to this host name or address.
    Hostname(String),
}

/// Who runs the rendezvous TCPStore server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreHost {
    /// Rank 0 starts the server at `MASTER_ADDR:MASTER_PORT`; the others connect to it.
    #[default]
    Rank0,
    /// The launcher already runs it there (torchrun's agent does, and says so with
    /// `TORCHELASTIC_USE_AGENT_STORE=True`); every rank connects as a client.
    Launcher,
}

/// Everything a process needs to join a group; [`DdpConfig::from_env`] reads it from torchrun's
/// environment, [`DdpConfig::new`] takes it from code. Timeouts and the backend have defaults that
/// the `with_*` methods change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DdpConfig {
    /// This process's rank, in `0..world_size`.
    pub rank: usize,
    /// The number of processes.
    pub world_size: usize,
    /// The rank on this machine (`LOCAL_RANK`), when the launcher gave one: which GPU to use.
    pub local_rank: Option<usize>,
    /// The rendezvous host (`MASTER_ADDR`).
    pub master_addr: String,
    /// The rendezvous port (`MASTER_PORT`).
    pub master_port: u16,
    /// Who runs the rendezvous server.
    pub store_host: StoreHost,
    /// How long a collective may wait for the other ranks before it fails; a rank that died or
    /// stopped taking part makes the others fail after at most this long. Default: 5 minutes.
    pub timeout: Duration,
    /// How long joining may wait for the other ranks to arrive. Default: 5 minutes.
    pub rendezvous_timeout: Duration,
    /// The collective backend. Default: Gloo.
    pub backend: Backend,
    /// Gloo's sockets. Default: [`GlooDevice::Auto`].
    pub gloo_device: GlooDevice,
    /// Gloo's worker threads. Default: 2, as in PyTorch.
    pub gloo_threads: usize,
    /// Keys of this group in the store start with this, so that restarts and several groups do not
    /// collide. Default: `distill_ddp/<TORCHELASTIC_RESTART_COUNT or 0>/`.
    pub store_prefix: String,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

impl DdpConfig {
    /// A configuration for `rank` of `world_size`, meeting at `master_addr:master_port` where
    /// rank 0 hosts the store; an error when `rank` is not below `world_size` or the address is empty.
    pub fn new(
        rank: usize,
        world_size: usize,
        master_addr: impl Into<String>,
        master_port: u16,
    ) -> Result<Self, DdpError> {
        let master_addr = master_addr.into();
        if world_size == 0 {
            return Err(DdpError::EmptyWorld);
        }
        if rank >= world_size {
            return Err(DdpError::RankOutOfRange { what: "rank", rank, world_size });
        }
        if master_addr.trim().is_empty() {
            return Err(DdpError::EmptyAddress);
        }
        Ok(Self {
            rank,
            world_size,
            local_rank: None,
            master_addr,
            master_port,
            store_host: StoreHost::Rank0,
            timeout: DEFAULT_TIMEOUT,
            rendezvous_timeout: DEFAULT_TIMEOUT,
            backend: Backend::Gloo,
            gloo_device: GlooDevice::Auto,
            gloo_threads: 2,
            store_prefix: "distill_ddp/0/".into(),
        })
    }

    /// Reads torchrun's environment: `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` (required),
    /// `LOCAL_RANK` (optional), `TORCHELASTIC_USE_AGENT_STORE` (torchrun's agent hosts the store),
    /// `TORCHELASTIC_RESTART_COUNT` (part of the store prefix) and `GLOO_SOCKET_IFNAME`
    /// (comma-separated interfaces for Gloo). A missing or malformed variable is an error naming it.
    pub fn from_env() -> Result<Self, DdpError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any variable lookup (tests, config files).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, DdpError> {
        let required = |var: &'static str| match lookup(var) {
            Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
            _ => Err(DdpError::MissingEnv { var }),
        };
        let number = |var: &'static str, value: String| {
            value.parse::<usize>().map_err(|e| DdpError::InvalidEnv { var, value, reason: e.to_string() })
        };
        let rank = number("RANK", required("RANK")?)?;
        let world_size = number("WORLD_SIZE", required("WORLD_SIZE")?)?;
        if world_size == 0 {
            return Err(DdpError::InvalidEnv {
                var: "WORLD_SIZE",
                value: "0".into(),
                reason: "a group needs at least one process".into(),
            });
        }
        if rank >= world_size {
            return Err(DdpError::InvalidEnv {
                var: "RANK",
                value: rank.to_string(),
                reason: format!("out of range for WORLD_SIZE={world_size}"),
            });
        }
        let master_addr = required("MASTER_ADDR")?;
        let port = required("MASTER_PORT")?;
        let master_port = match port.parse::<u16>() {
            Ok(0) => Err("port 0 cannot be a rendezvous port".to_owned()),
            Ok(p) => Ok(p),
            Err(e) => Err(e.to_string()),
        }
        .map_err(|reason| DdpError::InvalidEnv { var: "MASTER_PORT", value: port.clone(), reason })?;
        let local_rank = match lookup("LOCAL_RANK") {
            Some(value) if !value.trim().is_empty() => Some(number("LOCAL_RANK", value.trim().to_owned())?),
            _ => None,
        };
        let mut config = Self::new(rank, world_size, master_addr, master_port)?;
        config.local_rank = local_rank;
        if lookup("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True") {
            config.store_host = StoreHost::Launcher;
        }
        if let Some(restart) = lookup("TORCHELASTIC_RESTART_COUNT") {
            let restart = number("TORCHELASTIC_RESTART_COUNT", restart.trim().to_owned())?;
            config.store_prefix = format!("distill_ddp/{restart}/");
        }
        if let Some(names) = lookup("GLOO_SOCKET_IFNAME") {
            let names: Vec<String> =
                names.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
            if !names.is_empty() {
                config.gloo_device = GlooDevice::Interfaces(names);
            }
        }
        Ok(config)
    }

    /// Sets the collective timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the rendezvous timeout.
    pub fn with_rendezvous_timeout(mut self, timeout: Duration) -> Self {
        self.rendezvous_timeout = timeout;
        self
    }

    /// Sets the backend.
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Sets Gloo's sockets.
    pub fn with_gloo_device(mut self, device: GlooDevice) -> Self {
        self.gloo_device = device;
        self
    }

    /// Sets who hosts the rendezvous store.
    pub fn with_store_host(mut self, host: StoreHost) -> Self {
        self.store_host = host;
        self
    }

    /// Whether the rendezvous address is on this machine only (`localhost`, `127.x.y.z`, `::1`).
    pub(crate) fn is_loopback(&self) -> bool {
        let addr = self.master_addr.trim_start_matches('[').trim_end_matches(']');
        addr.eq_ignore_ascii_case("localhost") || addr.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<DdpConfig, DdpError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        DdpConfig::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    const TORCHRUN: [(&str, &str); 8] = [
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "localhost"),
        ("MASTER_PORT", "29500"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ("TORCHELASTIC_RESTART_COUNT", "3"),
        ("GLOO_SOCKET_IFNAME", "eth0, eth1"),
    ];

    #[test]
    fn reads_torchruns_environment() {
        let config = env(&TORCHRUN).unwrap();
        assert_eq!((config.rank, config.world_size, config.local_rank), (1, 2, Some(1)));
        assert_eq!((config.master_addr.as_str(), config.master_port), ("localhost", 29500));
        assert_eq!(config.store_host, StoreHost::Launcher);
        assert_eq!(config.store_prefix, "distill_ddp/3/");
        assert_eq!(config.gloo_device, GlooDevice::Interfaces(vec!["eth0".into(), "eth1".into()]));
        assert!(config.is_loopback());
    }

    #[test]
    fn a_manual_launch_needs_only_the_four_variables() {
        let config = env(&TORCHRUN[..2].iter().chain(&TORCHRUN[3..5]).copied().collect::<Vec<_>>()).unwrap();
        assert_eq!(config.local_rank, None);
        assert_eq!(config.store_host, StoreHost::Rank0);
        assert_eq!(config.gloo_device, GlooDevice::Auto);
        assert_eq!(config.timeout, Duration::from_secs(300));
    }

    #[test]
    fn missing_and_malformed_variables_are_named() {
        for var in ["RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"] {
            let without: Vec<_> = TORCHRUN.iter().filter(|(k, _)| *k != var).copied().collect();
            let err = env(&without).unwrap_err();
            assert!(matches!(err, DdpError::MissingEnv { var: v } if v == var), "{var}: {err:?}");
            assert!(err.to_string().contains("torchrun"), "{err}");
        }
        let with = |var: &str, value: &'static str| {
            let vars: Vec<_> = TORCHRUN.iter().map(|&(k, v)| if k == var { (k, value) } else { (k, v) }).collect();
            env(&vars).unwrap_err().to_string()
        };
        assert_eq!(with("RANK", "2"), "the environment variable `RANK` is `2`: out of range for WORLD_SIZE=2");
        assert!(with("MASTER_PORT", "70000").starts_with("the environment variable `MASTER_PORT` is `70000`: "));
        assert!(with("MASTER_PORT", "0").ends_with("port 0 cannot be a rendezvous port"));
        assert!(with("WORLD_SIZE", "0").ends_with("a group needs at least one process"));
        assert!(with("LOCAL_RANK", "x").starts_with("the environment variable `LOCAL_RANK` is `x`: "));
    }

    #[test]
    fn loopback_addresses() {
        let at = |addr: &str| DdpConfig::new(0, 1, addr, 1).unwrap().is_loopback();
        assert!(at("127.0.0.1") && at("LOCALHOST") && at("::1") && at("[::1]"));
        assert!(!at("10.0.0.2") && !at("node-a"));
        assert!(DdpConfig::new(1, 1, "h", 1).is_err() && DdpConfig::new(0, 1, " ", 1).is_err());
    }
}
