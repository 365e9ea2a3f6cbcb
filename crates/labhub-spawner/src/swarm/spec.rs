//! The service spec for one server, as a pure function of the engine's container plan, so
//! the Swarm mode runs exactly what the engine mode runs (image by content id, command,
//! environment, user, capabilities, labels) and every field can be unit-tested.
//!
//! What a container spec says and a service spec says differently:
//! - the container's `Cmd` is the service's `Args` (`Command` would replace the entrypoint);
//! - CPU and memory are both **limits and reservations** (the scheduler places a task only
//!   where the quota fits), the pids limit is `Resources.Limits.Pids`;
//! - GPUs are a generic resource (`NVIDIA-GPU` by default) plus a placement constraint;
//! - `RestartPolicy` `none`: a server that exits stays stopped, as the hub expects;
//! - no published ports, `EndpointSpec` `dnsrr` (no virtual IP, no ingress routing mesh);
//! - `NoNewPrivileges` is a service field only from API 1.46 (Docker 27); older engines
//!   ignore it (see the README's Swarm section);
//! - with NFS homes the home's mount carries the volume's driver options, so whichever
//!   node runs the task creates the same NFS-backed volume.

use std::collections::HashMap;

use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, GenericResourcesInner, GenericResourcesInnerDiscreteResourceSpec, Limit, Mount,
    MountVolumeOptions, MountVolumeOptionsDriverConfig, NetworkAttachmentConfig, ResourceObject, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecPrivileges,
    TaskSpecLogDriver, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use labhub_core::NodeName;
use labhub_core::spawner::{ServerSpec, SpawnError};

use crate::config::{DockerConfig, SwarmHomes};
use crate::plan::ContainerPlan;

/// How long a task may shut down cleanly before Swarm kills it (as the engine mode's stop).
const STOP_GRACE_NANOS: i64 = 5_000_000_000;

/// Builds the service for `plan`, named `name`, running `image` (the plan's content id, or
/// its registry digest), on the overlay; refuses what a service cannot carry.
pub(crate) fn service_spec(
    spec: &ServerSpec,
    plan: &ContainerPlan,
    name: &str,
    image: &str,
    config: &DockerConfig,
    manager: &(String, NodeName),
) -> Result<ServiceSpec, SpawnError> {
    let body = &plan.body;
    let host = body.host_config.clone().unwrap_or_default();
    let labels = body.labels.clone().unwrap_or_default();
    let res = &spec.resources;
    let nano_cpus = i64::from(res.cpu_millis) * 1_000_000;
    let memory = host.memory;

    let mounts = host.mounts.unwrap_or_default().into_iter().map(|m| nfs_mount(m, plan, config)).collect();
    let mut constraints = config.swarm_constraints.clone();
    constraints.extend(spec.placement.iter().map(|p| p.as_str().to_string()));
    if let Some(node) = &spec.node {
        // Where the owner's homes are (`swarm_homes = "pinned"`).
        constraints.push(format!("node.hostname=={node}"));
    }
    if spec.contract == labhub_core::Contract::Jupyterhub {
        // Its task reaches the hub's single-user API at its own node's docker_gwbridge
        // gateway, which is the hub's host only on the hub's node.
        let (id, hostname) = manager;
        if spec.node.as_ref().is_some_and(|n| n != hostname) {
            return Err(SpawnError::Invalid(format!(
                "a server of JupyterHub's contract runs on the hub's node ({hostname}) only, where it reaches the hub's single-user API, but {}'s homes are pinned to another node; pin them to {hostname} (labhub user pin) or use another catalogue entry",
                spec.user
            )));
        }
        constraints.push(format!("node.id=={id}"));
    }
    let mut generic = Vec::new();
    if res.gpus > 0 {
        constraints.push(config.swarm_gpu_constraint.clone());
        generic.push(GenericResourcesInner {
            discrete_resource_spec: Some(GenericResourcesInnerDiscreteResourceSpec {
                kind: Some(config.swarm_gpu_resource.clone()),
                value: Some(i64::from(res.gpus)),
            }),
            ..Default::default()
        });
    }
    let container = TaskSpecContainerSpec {
        image: Some(image.to_string()),
        labels: Some(labels.clone()),
        args: body.cmd.clone(),
        env: body.env.clone(),
        dir: body.working_dir.clone(),
        user: body.user.clone(),
        privileges: Some(TaskSpecContainerSpecPrivileges { no_new_privileges: Some(true), ..Default::default() }),
        tty: Some(false),
        open_stdin: Some(false),
        read_only: Some(false),
        mounts: Some(mounts),
        stop_grace_period: Some(STOP_GRACE_NANOS),
        init: host.init,
        capability_drop: host.cap_drop,
        capability_add: host.cap_add.filter(|c| !c.is_empty()),
        ..Default::default()
    };
    let task = TaskSpec {
        container_spec: Some(container),
        resources: Some(TaskSpecResources {
            limits: Some(Limit { nano_cpus: Some(nano_cpus), memory_bytes: memory, pids: host.pids_limit }),
            reservations: Some(ResourceObject {
                nano_cpus: Some(nano_cpus),
                memory_bytes: memory,
                generic_resources: (!generic.is_empty()).then_some(generic),
            }),
            ..Default::default()
        }),
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
            max_attempts: Some(0),
            ..Default::default()
        }),
        placement: Some(TaskSpecPlacement {
            constraints: (!constraints.is_empty()).then_some(constraints),
            ..Default::default()
        }),
        networks: Some(vec![NetworkAttachmentConfig {
            target: Some(config.swarm_network.to_string()),
            ..Default::default()
        }]),
        log_driver: host
            .log_config
            .map(|l| TaskSpecLogDriver { name: l.typ, options: l.config.map(|c| c.into_iter().collect()) }),
        ..Default::default()
    };
    Ok(ServiceSpec {
        name: Some(name.to_string()),
        labels: Some(labels),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec { mode: Some(EndpointSpecModeEnum::DNSRR), ports: None }),
        ..Default::default()
    })
}

/// With NFS homes, the home's volume (the plan's first mount) is declared with NFS options,
/// one export folder per volume name (which carries the owner's id); with pinned homes, with
/// the hub's labels (a node other than the manager creates it at the first start there);
/// other mounts as planned.
fn nfs_mount(mount: Mount, plan: &ContainerPlan, config: &DockerConfig) -> Mount {
    let home = plan.body.host_config.as_ref().and_then(|h| h.mounts.as_ref()).and_then(|m| m.first());
    let is_home = home.is_some_and(|h| h.source == mount.source && h.target == mount.target);
    if config.swarm_homes == SwarmHomes::Pinned && is_home {
        let labels = plan.body.labels.clone();
        return Mount { volume_options: Some(MountVolumeOptions { labels, ..Default::default() }), ..mount };
    }
    if config.swarm_homes != SwarmHomes::Nfs || !is_home {
        return mount;
    }
    let volume = mount.source.clone().unwrap_or_default();
    let options = HashMap::from([
        ("type".to_string(), "nfs".to_string()),
        ("o".to_string(), format!("addr={},rw,nfsvers=4", config.swarm_nfs_addr)),
        ("device".to_string(), format!(":{}/{volume}", config.swarm_nfs_export.trim_end_matches('/'))),
    ]);
    Mount {
        volume_options: Some(MountVolumeOptions {
            driver_config: Some(MountVolumeOptionsDriverConfig { name: Some("local".into()), options: Some(options) }),
            labels: plan.body.labels.clone(),
            ..Default::default()
        }),
        ..mount
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use labhub_core::{ImageKind, ImageRef, Resources, Secret, ServerName, Storage, UserId, UserName};

    use super::*;
    use crate::config::HubId;
    use crate::naming::ServerNames;
    use crate::plan::{ImageFacts, PlanContext, container_plan};

    fn server(kind: ImageKind, gpus: u32) -> ServerSpec {
        ServerSpec {
            owner: UserId::new(7),
            user: UserName::parse("alice").unwrap(),
            home: Storage::Home { owner: UserId::new(7), server: None },
            mounts: Vec::new(),
            server: Some(ServerName::parse("gpu").unwrap()),
            image: ImageRef::parse("labhub/jupyterlab:1").unwrap(),
            kind,
            port: kind.default_port(),
            command: None,
            resources: Resources { cpu_millis: 1500, memory_bytes: 2 << 30, gpus },
            base_url: "/user/alice/gpu/".into(),
            token: Secret::new("s3cret".into()),
            env: BTreeMap::new(),
            start_timeout: Duration::from_secs(30),
            node: None,
            contract: labhub_core::Contract::Labhub,
            placement: Vec::new(),
        }
    }

    /// The hub's node.
    fn manager() -> (String, labhub_core::NodeName) {
        ("m4n4g3r".into(), labhub_core::NodeName::parse("hub-node").unwrap())
    }

    fn plan(spec: &ServerSpec) -> ContainerPlan {
        let hub = HubId::parse("labhub").unwrap();
        let names = ServerNames::new(&hub, spec.owner, spec.server.as_ref(), "labhub-home_U7_gpu".into());
        let image = ImageFacts { id: "sha256:abc".into(), user: None, home: None, repo_digest: None };
        let ctx = PlanContext {
            hub: &hub,
            names: &names,
            network: "labhub-swarm",
            pids_limit: 512,
            image: &image,
            extra: &[],
        };
        container_plan(spec, &ctx).unwrap()
    }

    #[test]
    fn the_service_carries_the_container_plan_and_the_quota() {
        let s = server(ImageKind::Jupyter, 0);
        let p = plan(&s);
        let svc = service_spec(&s, &p, "labhub_U7_gpu", "sha256:abc", &DockerConfig::default(), &manager()).unwrap();
        assert_eq!(svc.name.as_deref(), Some("labhub_U7_gpu"));
        assert_eq!(svc.mode.unwrap().replicated.unwrap().replicas, Some(1));
        let endpoint = svc.endpoint_spec.unwrap();
        assert_eq!((endpoint.mode, endpoint.ports), (Some(EndpointSpecModeEnum::DNSRR), None));
        let task = svc.task_template.unwrap();
        let c = task.container_spec.unwrap();
        assert_eq!(c.image.as_deref(), Some("sha256:abc"), "by content id");
        assert_eq!(c.args, p.body.cmd, "the container's Cmd, the image's entrypoint kept");
        assert_eq!(c.command, None);
        assert_eq!(c.user.as_deref(), Some("1000:100"));
        assert_eq!(c.env, p.body.env);
        assert_eq!(c.labels, p.body.labels);
        assert_eq!(svc.labels, p.body.labels);
        assert_eq!(c.capability_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(c.privileges.unwrap().no_new_privileges, Some(true));
        let res = task.resources.unwrap();
        let limits = res.limits.unwrap();
        assert_eq!(
            (limits.nano_cpus, limits.memory_bytes, limits.pids),
            (Some(1_500_000_000), Some(2 << 30), Some(512))
        );
        let reserved = res.reservations.unwrap();
        assert_eq!((reserved.nano_cpus, reserved.memory_bytes), (Some(1_500_000_000), Some(2 << 30)));
        assert_eq!(reserved.generic_resources, None);
        assert_eq!(task.restart_policy.unwrap().condition, Some(TaskSpecRestartPolicyConditionEnum::NONE));
        assert_eq!(task.placement.unwrap().constraints, None);
        assert_eq!(task.networks.unwrap()[0].target.as_deref(), Some("labhub-swarm"));
        let mounts = c.mounts.unwrap();
        assert_eq!(mounts[0].source.as_deref(), Some("labhub-home_U7_gpu"));
        assert_eq!(mounts[0].volume_options, None, "a local home");
    }

    #[test]
    fn gpus_constraints_and_nfs_homes() {
        let mut s = server(ImageKind::Jupyter, 2);
        s.placement = vec![labhub_core::Placement::parse("node.labels.gpu-model == a100").unwrap()];
        s.node = Some(labhub_core::NodeName::parse("lab2").unwrap());
        let config = DockerConfig {
            swarm_constraints: vec!["node.labels.lab==yes".into()],
            swarm_homes: SwarmHomes::Nfs,
            swarm_nfs_addr: "10.0.0.5".into(),
            swarm_nfs_export: "/srv/homes/".into(),
            ..DockerConfig::default()
        };
        let task = service_spec(&s, &plan(&s), "x", "sha256:abc", &config, &manager()).unwrap().task_template.unwrap();
        assert_eq!(
            task.placement.unwrap().constraints.unwrap(),
            ["node.labels.lab==yes", "node.labels.gpu-model==a100", "node.hostname==lab2", "node.labels.gpu==true"],
            "the site's, the catalogue entry's, the owner's node, then the GPUs'"
        );
        let generic = task.resources.unwrap().reservations.unwrap().generic_resources.unwrap();
        let gpu = generic[0].discrete_resource_spec.clone().unwrap();
        assert_eq!((gpu.kind.as_deref(), gpu.value), (Some("NVIDIA-GPU"), Some(2)));
        let home = task.container_spec.unwrap().mounts.unwrap().remove(0);
        let driver = home.volume_options.unwrap().driver_config.unwrap();
        let options = driver.options.unwrap();
        assert_eq!(driver.name.as_deref(), Some("local"));
        assert_eq!(options["type"], "nfs");
        assert_eq!(options["o"], "addr=10.0.0.5,rw,nfsvers=4");
        assert_eq!(options["device"], ":/srv/homes/labhub-home_U7_gpu", "one export folder per home (by user id)");
    }

    #[test]
    fn an_rstudio_service_makes_its_private_state_in_its_own_command() {
        let s = server(ImageKind::Rstudio, 0);
        let p = plan(&s);
        let task = service_spec(&s, &p, "x", "sha256:abc", &DockerConfig::default(), &manager())
            .unwrap()
            .task_template
            .unwrap();
        let container = task.container_spec.unwrap();
        assert_eq!(container.command, None, "the image's entrypoint is kept");
        let args = container.args.unwrap();
        assert_eq!(args, p.body.cmd.unwrap(), "the container plan's command, prologue and all");
        assert_eq!(&args[..2], ["/bin/sh", "-c"]);
        assert_eq!(container.user.as_deref(), Some("1000:1000"), "the prologue runs as the server's user");
    }

    #[test]
    fn a_server_of_jupyterhubs_contract_runs_on_the_hubs_node_only() {
        let mut s = server(ImageKind::Jupyter, 0);
        s.contract = labhub_core::Contract::Jupyterhub;
        let task = service_spec(&s, &plan(&s), "x", "sha256:abc", &DockerConfig::default(), &manager())
            .unwrap()
            .task_template
            .unwrap();
        assert_eq!(task.placement.unwrap().constraints.unwrap(), ["node.id==m4n4g3r"]);
        s.node = Some(labhub_core::NodeName::parse("hub-node").unwrap());
        assert!(service_spec(&s, &plan(&s), "x", "sha256:abc", &DockerConfig::default(), &manager()).is_ok());
        s.node = Some(labhub_core::NodeName::parse("lab2").unwrap());
        let e = service_spec(&s, &plan(&s), "x", "sha256:abc", &DockerConfig::default(), &manager()).unwrap_err();
        assert!(matches!(&e, SpawnError::Invalid(m) if m.contains("hub's node (hub-node) only")), "{e}");
    }
}
