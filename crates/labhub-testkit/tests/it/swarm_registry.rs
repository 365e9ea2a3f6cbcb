//! `swarm_images = "registry"` against a real registry: Debian's `docker-registry`, started by
//! each test (`labhub_testkit::registry`). On the single-node swarm, with the registry on a
//! loopback port: an image from no registry is pushed by the hub and its service names the
//! registry's digest; one the admin pushed is pulled and run by its digest; without
//! `swarm_registry` the first is refused. On two nodes, with the registry on the manager's
//! address over TLS (the second node's engine reaches it there): a server pinned to the
//! second node runs from the bytes that node pulled itself, by digest.

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, RemoveImageOptions, TagImageOptions};
use futures::StreamExt;
use labhub_core::spawner::{Progress, SpawnError, Spawner, Started};
use labhub_core::{ImageRef, RegistryPath};
use labhub_spawner::{SwarmHomes, SwarmImages};
use labhub_testkit::pg::free_port;
use labhub_testkit::registry::Registry;
use labhub_testkit::swarm::{MANAGER_ADDR, SwarmScope};

use crate::common::test_server_binary;
use crate::swarm::{get, service_id, services_of, spec, start};

/// The image the service of `started` names.
async fn service_image(s: &SwarmScope, started: &Started) -> String {
    let svc = s.engine().inspect_service(&service_id(started), None).await.unwrap();
    svc.spec.unwrap().task_template.unwrap().container_spec.unwrap().image.unwrap()
}

fn said(progress: &[Progress], start: &str) -> bool {
    progress.iter().any(|p| p.message.starts_with(start))
}

async fn untag(s: &SwarmScope, reference: &str) {
    let _ = s.engine().remove_image(reference, None::<RemoveImageOptions>, None).await;
}

#[tokio::test]
async fn an_image_from_no_registry_is_pushed_to_the_labs_registry_and_runs_by_its_digest() {
    let registry = Registry::start().await;
    let path = RegistryPath::parse(&format!("{}/labhub", registry.host())).unwrap();
    let s = SwarmScope::with(test_server_binary(), |c| {
        c.swarm_images = SwarmImages::Registry;
        c.swarm_registry = Some(path.clone());
    })
    .await;
    let spec = spec(&s, "rita", 21);
    let id = s.engine().inspect_image(spec.image.as_str()).await.unwrap().id.unwrap();
    let (started, progress) = start(&s.spawner, &spec).await.expect("the image is pushed and the server starts");
    assert!(said(&progress, "pushing image"), "{progress:?}");

    // The registry holds it under a tag naming its content, and the service names the
    // digest the registry serves for that tag: what every node would pull.
    let target = path.reference_for(&spec.image, &id).unwrap();
    let tag = target.as_str().rsplit_once(':').unwrap().1.to_string();
    assert!(registry.repositories().await.contains(&"labhub/testserver".to_string()));
    let digest = registry.manifest_digest("labhub/testserver", &tag).await.expect("the pushed manifest");
    let pinned = format!("{}/labhub/testserver@{digest}", registry.host());
    assert_eq!(service_image(&s, &started).await, pinned);
    assert_eq!(started.repo_digest.as_deref(), Some(pinned.as_str()), "recorded for relaunch");
    assert_eq!(get(started.endpoint, "/user/rita/api", spec.token.expose()).await.unwrap(), 200);
    s.spawner.stop(&started.state).await.unwrap();

    // The engine remembers the digest: the next start pushes nothing and runs the same bytes.
    let (again, progress) = start(&s.spawner, &spec).await.unwrap();
    assert!(!said(&progress, "pushing image"), "{progress:?}");
    assert_eq!(service_image(&s, &again).await, pinned);
    s.spawner.stop(&again.state).await.unwrap();
    untag(&s, target.as_str()).await;
}

#[tokio::test]
async fn without_a_registry_path_an_image_from_no_registry_is_refused_and_one_from_the_registry_is_pulled() {
    let registry = Registry::start().await;
    let s = SwarmScope::with(test_server_binary(), |c| c.swarm_images = SwarmImages::Registry).await;
    let mut spec = spec(&s, "sam", 22);
    let refused = start(&s.spawner, &spec).await.unwrap_err();
    assert!(
        matches!(&refused, SpawnError::Invalid(m) if m.contains("came from no registry") && m.contains("set swarm_registry")),
        "{refused}"
    );
    assert!(services_of(&s).await.is_empty(), "nothing was made");

    // The admin pushes the image and names it by its registry reference; the hub's engine
    // lacks that reference, pulls it (with progress) and the service runs its digest.
    let named = format!("{}/lab/testserver", registry.host());
    let tag = TagImageOptions { repo: Some(named.clone()), tag: Some("1".into()) };
    s.engine().tag_image(spec.image.as_str(), Some(tag)).await.unwrap();
    let options = PushImageOptions { tag: Some("1".into()), ..Default::default() };
    let mut push = s.engine().push_image(&named, Some(options), Some(DockerCredentials::default()));
    while let Some(step) = push.next().await {
        assert!(step.unwrap().error_detail.is_none(), "the push failed");
    }
    untag(&s, &format!("{named}:1")).await;
    assert!(s.engine().inspect_image(&format!("{named}:1")).await.is_err(), "the engine lacks the reference");

    spec.image = ImageRef::parse(&format!("{named}:1")).unwrap();
    let (started, progress) = start(&s.spawner, &spec).await.expect("pulled from the registry and started");
    assert!(said(&progress, "pulling image"), "{progress:?}");
    let digest = registry.manifest_digest("lab/testserver", "1").await.expect("the admin's manifest");
    assert_eq!(service_image(&s, &started).await, format!("{named}@{digest}"));
    assert_eq!(started.repo_digest.as_deref(), Some(format!("{named}@{digest}").as_str()), "recorded for relaunch");
    assert_eq!(get(started.endpoint, "/user/sam/api", spec.token.expose()).await.unwrap(), 200);
    s.spawner.stop(&started.state).await.unwrap();
    untag(&s, &format!("{named}:1")).await;
}

#[tokio::test]
async fn a_server_on_the_second_node_runs_from_the_bytes_that_node_pulled_from_the_registry() {
    let port = free_port();
    let path = RegistryPath::parse(&format!("{MANAGER_ADDR}:{port}/labhub")).unwrap();
    let s = SwarmScope::with_node(test_server_binary(), |c, node| {
        c.swarm_homes = SwarmHomes::Pinned;
        c.swarm_nodes = vec![crate::swarm_nodes::listed(node)];
        c.swarm_images = SwarmImages::Registry;
        c.swarm_registry = Some(path.clone());
    })
    .await;
    // On the manager's address, which exists while the swarm does and the node reaches.
    let registry = Registry::start_tls(MANAGER_ADDR, port).await;
    let node = s.node.as_ref().unwrap();
    let id = s.engine().inspect_image(s.docker.test_image.as_str()).await.unwrap().id.unwrap();
    assert!(node.docker.inspect_image(&id).await.is_err(), "the second node starts without the image");

    let mut spec = crate::swarm_nodes::spec(&s, "tess", 23);
    spec.node = Some(node.hostname.clone());
    let (started, progress) = start(&s.spawner, &spec).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(said(&progress, "pushing image"), "{progress:?}");
    assert!(!said(&progress, "copying the image"), "the registry, not labhub, brings it: {progress:?}");

    // The task runs on the second node, from the bytes that node pulled by the digest the
    // registry serves; the hub reaches it there.
    let target = path.reference_for(&spec.image, &id).unwrap();
    let digest = registry.manifest_digest("labhub/testserver", target.as_str().rsplit_once(':').unwrap().1).await;
    let pinned = format!("{}/labhub/testserver@{}", registry.host(), digest.expect("the pushed manifest"));
    assert_eq!(service_image(&s, &started).await, pinned);
    let (task_node, container) = crate::swarm_nodes::task_of(&s, &service_id(&started)).await;
    assert_eq!(task_node, node.node_id, "the task runs on the second node");
    let pulled = node.docker.inspect_image(&id).await.expect("the node pulled the image");
    assert!(pulled.repo_digests.unwrap_or_default().contains(&pinned), "pulled from the registry by that digest");
    let c = node.docker.inspect_container(&container, None).await.unwrap();
    assert_eq!(c.image.as_deref(), Some(id.as_str()), "the same bytes as the manager's");
    assert_eq!(get(started.endpoint, "/user/tess/api", spec.token.expose()).await.unwrap(), 200);
    s.spawner.stop(&started.state).await.unwrap();
    untag(&s, target.as_str()).await;
}
