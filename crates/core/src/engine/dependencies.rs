//! Dependency mounts: jars and Python packages from a PVC, ConfigMap, Secret, image volume or
//! download, mounted on the Spark container and put on its classpath / PYTHONPATH.
//!
//! Where the entries go follows Spark's image entrypoint and launcher: executors start the
//! JVM with `-cp "$SPARK_CLASSPATH:$SPARK_DIST_CLASSPATH"` after the entrypoint appended
//! `$SPARK_EXTRA_CLASSPATH` to `SPARK_CLASSPATH` (which Spark itself sets from
//! spark.executor.extraClassPath, so we never touch it); the driver runs through
//! spark-submit, whose launcher reads `SPARK_DIST_CLASSPATH`.

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, ImageVolumeSource, PodSpec, SecurityContext, Volume,
    VolumeMount,
};

use super::containers::merge_container;
use super::env::append_path_entry;
use super::volumes::{add_mount, add_volume};
use super::Ctx;
use crate::policy::model::{Dependency, DependencySource, DownloadSource, PodPatch};
use crate::spark::SparkRole;

pub const DRIVER_CLASSPATH_VAR: &str = "SPARK_DIST_CLASSPATH";
pub const EXECUTOR_CLASSPATH_VAR: &str = "SPARK_EXTRA_CLASSPATH";
pub const PYTHONPATH_VAR: &str = "PYTHONPATH";
pub const DEFAULT_MOUNT_ROOT: &str = "/opt/spark/deps";
/// Where the download init container writes, inside its own filesystem.
const DOWNLOAD_DIR: &str = "/deps";

pub(crate) fn apply(
    ctx: &mut Ctx<'_>,
    spec: &mut PodSpec,
    patch: &PodPatch,
    spark: usize,
    role: SparkRole,
) {
    for dep in &patch.dependencies {
        apply_one(ctx, spec, dep, spark, role);
    }
}

pub fn volume_name(dep: &Dependency) -> String {
    format!("spark-deps-{}", dep.name)
}

pub fn mount_path(dep: &Dependency) -> String {
    dep.mount_path
        .clone()
        .unwrap_or_else(|| format!("{DEFAULT_MOUNT_ROOT}/{}", dep.name))
}

fn apply_one(
    ctx: &mut Ctx<'_>,
    spec: &mut PodSpec,
    dep: &Dependency,
    spark: usize,
    role: SparkRole,
) {
    let name = volume_name(dep);
    let path = mount_path(dep);
    let mut volume = Volume {
        name: name.clone(),
        ..Volume::default()
    };
    match &dep.source {
        DependencySource::PersistentVolumeClaim(s) => {
            volume.persistent_volume_claim = Some(s.clone())
        }
        DependencySource::ConfigMap(s) => volume.config_map = Some(s.clone()),
        DependencySource::Secret(s) => volume.secret = Some(s.clone()),
        DependencySource::Image(s) => {
            volume.image = Some(ImageVolumeSource {
                reference: Some(s.reference.clone()),
                pull_policy: s.pull_policy.map(|p| p.as_str().to_owned()),
            })
        }
        DependencySource::Download(_) => volume.empty_dir = Some(EmptyDirVolumeSource::default()),
    }
    if !add_volume(ctx, spec, &volume) {
        return;
    }
    if let DependencySource::Download(d) = &dep.source {
        let fetcher = download_container(&name, d);
        merge_container(
            ctx,
            "initContainers",
            spec.init_containers.get_or_insert_with(Vec::new),
            &fetcher,
        );
    }
    let mount = VolumeMount {
        name,
        mount_path: path.clone(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let container = &mut spec.containers[spark];
    if !add_mount(ctx, container, &mount) {
        return;
    }
    if dep.jars {
        let var = match role {
            SparkRole::Driver => DRIVER_CLASSPATH_VAR,
            SparkRole::Executor => EXECUTOR_CLASSPATH_VAR,
        };
        append_path_entry(ctx, container, var, &format!("{path}/*"));
    }
    if dep.python {
        append_path_entry(ctx, container, PYTHONPATH_VAR, &path);
    }
}

/// An init container that fetches every URL into the shared emptyDir. URLs are passed as
/// arguments, never through a shell, so a URL cannot inject commands.
fn download_container(volume: &str, d: &DownloadSource) -> Container {
    let mut args = vec![
        "--fail".to_owned(),
        "--silent".to_owned(),
        "--show-error".to_owned(),
        "--location".to_owned(),
        "--retry".to_owned(),
        "3".to_owned(),
        "--output-dir".to_owned(),
        DOWNLOAD_DIR.to_owned(),
        "--remote-name-all".to_owned(),
    ];
    args.extend(d.urls.iter().cloned());
    Container {
        name: volume.to_owned(),
        image: Some(d.image.clone()),
        command: Some(vec!["curl".to_owned()]),
        args: Some(args),
        volume_mounts: Some(vec![VolumeMount {
            name: volume.to_owned(),
            mount_path: DOWNLOAD_DIR.to_owned(),
            ..VolumeMount::default()
        }]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}
