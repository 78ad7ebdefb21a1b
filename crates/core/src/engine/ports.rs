//! Ports of the Spark container, merged by name and by containerPort/protocol. A port that
//! clashes with a different existing one (same name or same number) is reported, never
//! written: Spark declares its own (driver-rpc-port, blockmanager, spark-ui), and two
//! entries for one port would be rejected or ambiguous.

use k8s_openapi::api::core::v1::{ContainerPort, PodSpec};

use super::context::Ctx;
use crate::policy::model::PodPatch;

pub(crate) fn apply(ctx: &mut Ctx<'_>, spec: &mut PodSpec, patch: &PodPatch, spark: usize) {
    let container = &mut spec.containers[spark];
    for port in &patch.ports {
        let list = container.ports.get_or_insert_with(Vec::new);
        let same_number = list
            .iter()
            .find(|e| e.container_port == port.container_port && protocol(e) == protocol(port));
        let same_name = port
            .name
            .as_ref()
            .and_then(|n| list.iter().find(|e| e.name.as_ref() == Some(n)));
        match same_number.or(same_name) {
            None => {
                list.push(port.clone());
                ctx.change(|| {
                    (
                        format!("containers[{}].ports", container.name),
                        format!("added {}", show(port)),
                    )
                });
            }
            // Equal once the API server's defaults are taken into account: nothing to do.
            Some(e) if same_port(e, port) && same_name.is_none_or(|n| same_port(n, port)) => {}
            Some(e) => ctx.warn(format!(
                "policy \"{}\": port {} was not added to container \"{}\" because it already declares {}",
                ctx.policy,
                show(port),
                container.name,
                show(e)
            )),
        }
    }
}

fn protocol(p: &ContainerPort) -> &str {
    p.protocol.as_deref().unwrap_or("TCP")
}

/// `existing` already is the port the policy asks for; fields the policy leaves out
/// (name, hostPort, hostIP) do not matter.
fn same_port(existing: &ContainerPort, wanted: &ContainerPort) -> bool {
    existing.container_port == wanted.container_port
        && protocol(existing) == protocol(wanted)
        && (wanted.name.is_none() || existing.name == wanted.name)
        && (wanted.host_port.is_none() || existing.host_port == wanted.host_port)
        && (wanted.host_ip.is_none() || existing.host_ip == wanted.host_ip)
}

fn show(p: &ContainerPort) -> String {
    match &p.name {
        Some(n) => format!("\"{n}\" ({}/{})", p.container_port, protocol(p)),
        None => format!("{}/{}", p.container_port, protocol(p)),
    }
}
