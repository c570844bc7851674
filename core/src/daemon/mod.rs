//! Running a node: the configuration decides which plugins load, which backends
//! connect the node to the mesh, which work types it offers and where its control
//! service listens. This module wires those pieces together and keeps them running
//! until the process is told to stop. `reload` re-reads the file and changes only the
//! backends whose sections changed; a reload that fails leaves the node as it was.
//!
//! Trust is settled before any backend starts: the named TLS configurations are
//! built (a node whose own certificate does not name it does not start, unless
//! `skipreceptornamescheck`), and `node.firewallrules` is installed in the mesh.

mod backends;
pub mod notify;
mod trust;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Mutex;

use crate::config::{self, Config, Invocation};
use crate::control::connect::ConnectCommand;
use crate::control::metrics::MetricsCommand;
use crate::control::reload::{ERRORCODE_CONFIG, ERRORCODE_NOT_RELOADABLE};
use crate::control::{CommandRegistry, ControlListener, ControlService, ReloadFailure, ReloadFn};
use crate::mesh::{Mesh, MeshOptions};
use crate::metrics::http::{HttpServer, SnapshotFn};
use crate::metrics::{self, Snapshot};
use crate::plugin_host::{ClaimType, LoadOptions, PluginError, PluginHost};
use crate::services::{self, ServiceHandle, Services};
use crate::tls::TlsRegistry;
use crate::work::control::WorkCommand;
use crate::work::remote::{MeshDialer, RemoteOptions, RemoteWork, RemoteWorkType};
use crate::work::signing::{SignatureVerifier, WorkSigner};
use crate::work::store::Workceptor;

pub use backends::{
    session_params, BackendConfigError, BackendReloadError, Backends, ReloadSummary,
};

/// Go receptor's floor for the idle timeout of backend sessions.
const MIN_IDLE: Duration = Duration::from_secs(21);

/// A running node and everything it owns.
pub struct Daemon {
    /// The mesh driver.
    pub mesh: Mesh,
    /// The unit store.
    pub work: Arc<Workceptor>,
    plugins: Arc<PluginHost>,
    backends: Mutex<Backends>,
    config: Mutex<Config>,
    listeners: Mutex<Vec<ControlListener>>,
    /// Control listeners on the mesh and on TLS.
    control_services: Mutex<Vec<ServiceHandle>>,
    /// The proxies of the configuration.
    services: Mutex<Services>,
    /// The named `tls-server` / `tls-client` configurations (not reloadable).
    tls: Arc<TlsRegistry>,
    /// `work-verification`.
    verifier: Option<Arc<SignatureVerifier>>,
    /// Remote work (units submitted to other nodes).
    remote: Arc<RemoteWork>,
    argv: Vec<OsString>,
    config_file: Option<PathBuf>,
    /// The Prometheus endpoint, when configured.
    metrics_server: Mutex<Option<HttpServer>>,
    /// The mesh page, when configured.
    mesh_page_server: Mutex<Option<HttpServer>>,
}

impl Daemon {
    /// Starts a node from a parsed configuration. `argv` is the command line it came
    /// from, re-read on `reload` together with `config_file`.
    pub async fn start(
        mut config: Config,
        config_file: Option<PathBuf>,
        argv: Vec<OsString>,
    ) -> anyhow::Result<Arc<Daemon>> {
        let plugins = Arc::new(load_plugins(&config)?);
        // The plugins' sections as their plugins describe them (bare values, lists).
        config::describe_sections(&mut config, |kind| plugins.section_desc(kind))?;
        let tls = Arc::new(trust::tls_registry(&config)?);
        let node_id = config.node.id.clone();
        let max_idle = config
            .node
            .max_idle_connection_timeout
            .unwrap_or(MIN_IDLE)
            .max(MIN_IDLE);
        let mesh = Mesh::start_with_limits(
            MeshOptions {
                node_id: node_id.clone(),
                max_idle,
            },
            config.mesh_limits.routing.clone(),
        );
        trust::install_firewall(&mesh, &config).await?;

        let mut work_types: Vec<Arc<dyn crate::work::worktype::WorkType>> = Vec::new();
        for section in sections_claimed(&plugins, &config, ClaimType::WorkType) {
            let wt = plugins
                .work_type(&section.kind, &section.value)
                .with_context(|| section.origin.clone())?;
            // As Go receptor: a second section for a work type name is refused.
            if work_types.iter().any(|w| w.name() == wt.name()) {
                anyhow::bail!("work type {} already registered", wt.name());
            }
            work_types.push(wt);
        }
        let (verifier, signer) = load_signing(&config, &node_id)?;
        if verifier.is_none() {
            if let Some(wt) = work_types.iter().find(|w| w.verify_signature()) {
                anyhow::bail!(
                    "VerifySignature for work command '{}' is true, but the work verification public key is not specified",
                    wt.name()
                );
            }
        }
        let work = Workceptor::open_with(
            &node_id,
            &config.node.datadir,
            work_types,
            vec![RemoteWorkType::shared()],
        )
        .await
        .context("cannot open the work unit store")?;
        let dialer = Arc::new(MeshDialer::new(mesh.clone(), tls.clone()));
        let remote = RemoteWork::new(work.clone(), dialer, signer, RemoteOptions::default());
        // Before any client is served: units that cannot resume are marked failed.
        remote.recover().await;
        mesh.set_work_commands(
            work.work_types()
                .into_iter()
                .map(|w| receptor_proto::svcad::WorkCommand {
                    work_type: w.name,
                    secure: w.secure,
                })
                .collect(),
        )
        .await;

        let backend_sections = sections_claimed(&plugins, &config, ClaimType::Backend);
        let backends = Backends::start(&plugins, &mesh, &config, &tls, &backend_sections)?;

        let node = Arc::new(Daemon {
            mesh,
            work,
            plugins,
            backends: Mutex::new(backends),
            config: Mutex::new(config),
            listeners: Mutex::new(Vec::new()),
            control_services: Mutex::new(Vec::new()),
            services: Mutex::new(Services::default()),
            tls,
            verifier,
            remote,
            argv,
            config_file,
            metrics_server: Mutex::new(None),
            mesh_page_server: Mutex::new(None),
        });
        // Proxies before the control service: a node that greets is fully up.
        node.start_services().await?;
        node.start_metrics().await?;
        node.start_mesh_page().await?;
        node.start_control_services().await?;
        Ok(node)
    }

    /// Gathers the node's figures (see [`crate::metrics`]) on each call.
    pub fn metrics_source(&self) -> SnapshotFn {
        let mesh = self.mesh.clone();
        let work = self.work.clone();
        Arc::new(move || {
            let (mesh, work) = (mesh.clone(), work.clone());
            Box::pin(async move {
                let mut snapshot = Snapshot {
                    node: mesh.node_id().to_owned(),
                    mesh: mesh.metrics().await,
                    ..Snapshot::default()
                };
                for unit in work.list() {
                    let status = unit.status();
                    *snapshot
                        .work_types
                        .entry(status.work_type.clone())
                        .or_default()
                        .units
                        .entry(crate::work::status::state_name(status.state))
                        .or_default() += 1;
                }
                snapshot.with_node_counters()
            })
        })
    }

    /// Starts the Prometheus endpoint of the `metrics` item, if any.
    async fn start_metrics(&self) -> anyhow::Result<()> {
        let Some(settings) = self.config.lock().await.metrics.clone() else {
            return Ok(());
        };
        let tls = match &settings.tls {
            Some(name) => Some(self.tls.server(name)?.backend_config()),
            None => None,
        };
        let handler = metrics::http::metrics_handler(self.metrics_source());
        let server = metrics::http::serve("metrics", &settings.address, tls, handler)
            .await
            .context("metrics")?;
        tracing::info!("serving metrics on {}", server.local_addr());
        *self.metrics_server.lock().await = Some(server);
        Ok(())
    }

    /// Starts the web page of the `mesh-page` item, if any.
    async fn start_mesh_page(&self) -> anyhow::Result<()> {
        let Some(settings) = self.config.lock().await.mesh_page.clone() else {
            return Ok(());
        };
        let tls = match &settings.tls {
            Some(name) => Some(self.tls.server(name)?.backend_config()),
            None => None,
        };
        let handler = crate::mesh_page::handler(self.mesh.clone(), self.work.clone());
        let server = metrics::http::serve("mesh-page", &settings.address, tls, handler)
            .await
            .context("mesh-page")?;
        tracing::info!("serving the mesh page on {}", server.local_addr());
        *self.mesh_page_server.lock().await = Some(server);
        Ok(())
    }

    async fn start_control_services(self: &Arc<Daemon>) -> anyhow::Result<()> {
        let registry = CommandRegistry::new();
        let mut work_command = WorkCommand::new(self.work.clone()).with_remote(self.remote.clone());
        if let Some(verifier) = &self.verifier {
            work_command = work_command.with_verifier(verifier.clone());
        }
        registry
            .register(Arc::new(work_command))
            .context("registering the work command")?;
        registry
            .register(Arc::new(MetricsCommand::new(self.metrics_source())))
            .context("registering the metrics command")?;
        registry
            .register(Arc::new(ConnectCommand::new(
                self.mesh.clone(),
                self.tls.clone(),
            )))
            .context("registering the connect command")?;
        let reload = self.reload_fn();
        let config = self.config.lock().await.clone();
        let control = ControlService::for_mesh(&self.mesh, registry, reload)
            .context("starting the control service")?
            .with_limits(config.control_limits);
        // Mesh listeners first: once the unix socket greets, the node is fully up.
        for cs in config
            .control_services
            .iter()
            .filter(|cs| !cs.service.is_empty())
        {
            let tls = match non_empty(&cs.tls) {
                Some(name) => Some(self.tls.server(name)?),
                None => None,
            };
            let h = services::control::serve_mesh(&self.mesh, &control, &cs.service, tls)
                .await
                .with_context(|| format!("control service on mesh service {}", cs.service))?;
            self.control_services.lock().await.push(h);
        }
        let mut listeners = self.listeners.lock().await;
        for cs in &config.control_services {
            if let Some(addr) = &cs.tcp_listen {
                if let Some(name) = non_empty(&cs.tcp_tls) {
                    let tls = self.tls.server(name)?;
                    let l = control
                        .serve_tcp_tls(addr, tls.backend_config())
                        .await
                        .with_context(|| format!("control service on tcp {addr}"))?;
                    listeners.push(l);
                } else {
                    if non_empty(&cs.tls).is_some() {
                        tracing::warn!(
                            "Control service {} has TLS configured on the mesh listener but not on the TCP listener",
                            cs.service
                        );
                    }
                    let l = control
                        .serve_tcp(addr)
                        .await
                        .with_context(|| format!("control service on tcp {addr}"))?;
                    listeners.push(l);
                }
            }
            if let Some(path) = &cs.filename {
                let l = control
                    .serve_unix(path, cs.permissions)
                    .await
                    .with_context(|| format!("control service on {}", path.display()))?;
                listeners.push(l);
            }
            tracing::info!("Running control service {}", cs.service);
        }
        Ok(())
    }

    /// Starts the TCP, UDP and unix-socket proxies of the configuration.
    async fn start_services(&self) -> anyhow::Result<()> {
        let config = self.config.lock().await.clone();
        let started = Services::start(&self.mesh, &config, &self.tls)
            .await
            .map_err(|(kind, e)| anyhow::anyhow!("{kind}: {e}"))?;
        *self.services.lock().await = started;
        Ok(())
    }

    /// The `reload` command: only available when the node was started from a file.
    fn reload_fn(self: &Arc<Daemon>) -> Option<ReloadFn> {
        self.config_file.as_ref()?;
        let weak = Arc::downgrade(self);
        Some(Arc::new(move || {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(node) => node.reload_notified().await,
                    None => Err(ReloadFailure {
                        message: "node is shutting down".to_owned(),
                        code: ERRORCODE_CONFIG,
                    }),
                }
            })
        }))
    }

    /// [`Daemon::reload`], told to the service manager (`RELOADING=1`, then `READY=1`
    /// whatever the outcome: the node keeps running either way).
    pub async fn reload_notified(&self) -> Result<(), ReloadFailure> {
        notify::reloading();
        let outcome = self.reload().await;
        notify::ready(match &outcome {
            Ok(()) => "running; configuration reloaded",
            Err(_) => "running; last reload failed",
        });
        outcome
    }

    /// Re-reads the configuration and applies what changed in its backend sections
    /// (see [`Backends::reload`]); on any error the node keeps running as it was.
    pub async fn reload(&self) -> Result<(), ReloadFailure> {
        let fresh = match config::parse_args(self.argv.clone()) {
            Ok(Invocation::Run { config, .. }) => config,
            Ok(_) => {
                return Err(ReloadFailure {
                    message: "error loading config file: not a node configuration".to_owned(),
                    code: ERRORCODE_CONFIG,
                })
            }
            Err(e) => {
                return Err(ReloadFailure {
                    message: format!("error loading config file: {e}"),
                    code: ERRORCODE_CONFIG,
                })
            }
        };
        for section in &fresh.sections {
            let message = match self.plugins.require(&section.kind) {
                Ok(_) => continue,
                // A kind of Go's own list that this build lacks is said so.
                Err(e @ PluginError::NotProvided { .. }) => {
                    format!("error loading config file: {e}")
                }
                Err(_) => format!(
                    "error loading config file: could not get config type for command {0}: unknown config type {0}",
                    section.kind
                ),
            };
            return Err(ReloadFailure {
                message,
                code: ERRORCODE_CONFIG,
            });
        }
        let mut fresh = fresh;
        if let Err(e) =
            config::describe_sections(&mut fresh, |kind| self.plugins.section_desc(kind))
        {
            return Err(ReloadFailure {
                message: format!("error loading config file: {e}"),
                code: ERRORCODE_CONFIG,
            });
        }
        let mut current = self.config.lock().await;
        if let Err(e) = config::reload_check(&current, &fresh) {
            return Err(ReloadFailure {
                message: e.to_string(),
                code: ERRORCODE_NOT_RELOADABLE,
            });
        }
        let sections = sections_claimed(&self.plugins, &fresh, ClaimType::Backend);
        let mut backends = self.backends.lock().await;
        let summary = backends
            .reload(&self.plugins, &self.mesh, &fresh, &self.tls, &sections)
            .await
            .map_err(|e| ReloadFailure {
                message: format!("error starting backends: {e}"),
                code: ERRORCODE_CONFIG,
            })?;
        *current = fresh;
        tracing::info!(
            "configuration reloaded: {} backends kept, {} stopped, {} started",
            summary.kept,
            summary.stopped,
            summary.started
        );
        Ok(())
    }

    /// Stops backends, control listeners and the mesh.
    pub async fn shutdown(&self) {
        self.metrics_server.lock().await.take();
        self.mesh_page_server.lock().await.take();
        self.remote.shutdown();
        self.services.lock().await.stop();
        self.control_services.lock().await.clear();
        self.backends.lock().await.stop();
        for l in self.listeners.lock().await.drain(..) {
            l.close().await;
        }
        self.mesh.shutdown().await;
    }
}

/// An optional name where empty means absent (Go's zero value).
fn non_empty(name: &Option<String>) -> Option<&str> {
    name.as_deref().filter(|n| !n.is_empty())
}

/// Reads the `work-verification` and `work-signing` keys.
#[allow(clippy::type_complexity)]
fn load_signing(
    config: &Config,
    node_id: &str,
) -> anyhow::Result<(Option<Arc<SignatureVerifier>>, Option<Arc<WorkSigner>>)> {
    let verifier = match &config.work_verification {
        Some(v) => Some(Arc::new(
            SignatureVerifier::from_config(v, node_id).context("work-verification")?,
        )),
        None => None,
    };
    let signer = match &config.work_signing {
        Some(s) => Some(Arc::new(
            WorkSigner::from_config(s).context("work-signing")?,
        )),
        None => None,
    };
    Ok((verifier, signer))
}

/// Loads the configured plugins plus the default search path, checks that every plugin
/// section of the configuration is claimed by one of them, and unloads the default-path
/// plugins it does not need.
fn load_plugins(config: &Config) -> anyhow::Result<PluginHost> {
    let host = PluginHost::load(&LoadOptions {
        paths: config.plugins.clone(),
        default_search: true,
        isolated: config.isolated_plugins.clone(),
        call_timeout: config.plugin_call_timeout,
    })?;
    for section in &config.sections {
        host.require(&section.kind)
            .with_context(|| section.origin.clone())?;
    }
    // Plugins of the default path that this configuration does not use are not kept
    // mapped; `reload` loads one back if the new configuration needs it.
    host.unload_unused(config.sections.iter().map(|s| s.kind.as_str()));
    Ok(host)
}

fn sections_claimed<'a>(
    plugins: &PluginHost,
    config: &'a Config,
    want: ClaimType,
) -> Vec<&'a config::Section> {
    config
        .sections
        .iter()
        .filter(|s| plugins.claims(&s.kind).is_some_and(|(t, _)| t == want))
        .collect()
}

/// Runs a node until SIGINT or SIGTERM; SIGHUP reloads the configuration (as the
/// control service's `reload` does). The service manager hears of each step
/// ([`notify`]).
pub async fn run(
    config: Config,
    config_file: Option<PathBuf>,
    argv: Vec<OsString>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let reloadable = config_file.is_some();
    let node = Daemon::start(config, config_file, argv).await?;
    notify::ready("running");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                if !reloadable {
                    tracing::warn!("SIGHUP ignored: reload needs a node started with --config");
                    continue;
                }
                tracing::info!("SIGHUP: reloading the configuration");
                if let Err(failure) = node.reload_notified().await {
                    tracing::warn!("reload not successful: {}", failure.message);
                }
            }
        }
    }
    notify::stopping();
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}
