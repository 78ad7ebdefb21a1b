//! Dependency mounts: jars and Python packages from a PVC, ConfigMap, Secret, image volume or
//! download, mounted on the Spark container and put on its classpath / PYTHONPATH.
//!
//! Where the entries go follows Spark's image entrypoint and launcher: executors start the
//! JVM with `-cp "$SPARK_CLASSPATH:$SPARK_DIST_CLASSPATH"` after the entrypoint appended
//! `$SPARK_EXTRA_CLASSPATH` to `SPARK_CLASSPATH` (which Spark itself sets from
//! spark.executor.extraClassPath, so we never touch it); the driver runs through
//! spark-submit, whose launcher reads `SPARK_DIST_CLASSPATH`.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, ImageVolumeSource, PodSpec, SeccompProfile,
    SecurityContext, Volume, VolumeMount,
};

use super::containers::merge_container;
use super::env::append_path_entry;
use super::spark_conf::env_escape;
use super::volumes::{add_mount, add_volume};
use super::Ctx;
use crate::policy::model::{
    Dependency, DependencySource, DownloadSource, PodPatch, DEFAULT_DOWNLOAD_GROUP,
    DEFAULT_DOWNLOAD_STALL_SECONDS, DEFAULT_DOWNLOAD_USER,
};
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
    let fetcher = match &dep.source {
        DependencySource::Download(d) => match download_container(&name, d) {
            Some(c) => Some(c),
            None => {
                ctx.warn(format!(
                    "policy \"{}\": dependency \"{}\" was not added: a download URL has no file name",
                    ctx.policy, dep.name
                ));
                return;
            }
        },
        _ => None,
    };
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
    if !add_volume(ctx, spec, Cow::Owned(volume)) {
        return;
    }
    if let Some(fetcher) = fetcher {
        merge_container(
            ctx,
            "initContainers",
            spec.init_containers.get_or_insert_with(Vec::new),
            Cow::Owned(fetcher),
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

/// The download script, POSIX sh (busybox in curlimages/curl, dash on Debian). Fixed text:
/// URLs, file names and checksums reach it only as positional arguments, never as script.
/// It holds no `$(` and no `$$`, so the kubelet's `$(NAME)` expansion of command and args
/// leaves it as written. `--fail-early`: without it curl exits with the status of the last
/// transfer only, and an earlier failed URL went unnoticed. `--speed-time`: a transfer that
/// receives nothing for that long fails (exit 28) instead of keeping the pod in Init.
const DOWNLOAD_SCRIPT: &str = r#"set -eu
umask 022
dir=$1
stall=$2
shift 2
# "$@": for each file its URL, its file name and its SHA-256 (empty: not checked).
fetch() {
  set -- "$@" --
  while [ "$1" != -- ]; do
    set -- "$@" --output "$dir/$2" "$1"
    shift 3
  done
  shift
  curl --disable --fail --fail-early --silent --show-error --location --globoff \
    --proto =http,https --proto-redir =http,https --retry 3 \
    --connect-timeout "$stall" --speed-limit 1 --speed-time "$stall" "$@"
}
fetch "$@"
failed=0
while [ "$#" -gt 0 ]; do
  file=$dir/$2
  if [ ! -s "$file" ]; then
    echo "spark-admission: $1 left no file or an empty one at $file" >&2
    failed=1
  elif [ -n "$3" ]; then
    if ! sum=`sha256sum <"$file"`; then
      echo "spark-admission: cannot compute the SHA-256 of $file (the image needs sha256sum)" >&2
      failed=1
    elif [ "${sum%% *}" != "$3" ]; then
      echo "spark-admission: $file from $1 has SHA-256 ${sum%% *}, the policy expects $3" >&2
      failed=1
    fi
  fi
  shift 3
done
exit "$failed"
"#;

/// `$0` of the script: how sh names it in its own error messages.
const DOWNLOAD_SCRIPT_NAME: &str = "spark-admission-download";

/// An init container that fetches every URL into the shared emptyDir, checks that each file
/// is there, not empty and (when the policy gives one) has its SHA-256, and fails otherwise.
/// It runs as a numeric user: with only `runAsNonRoot`, the kubelet refuses an image whose
/// USER is a name (curlimages/curl's `curl_user`), since it cannot verify it is not root.
/// None when a URL has no file name (the policy check refuses such policies at load).
fn download_container(volume: &str, d: &DownloadSource) -> Option<Container> {
    // Every `$` doubled: the kubelet expands `$(NAME)` in args from the container's
    // environment, service links included, which a tenant can name.
    let stall = d
        .stall_timeout_seconds
        .unwrap_or(DEFAULT_DOWNLOAD_STALL_SECONDS);
    let mut args = vec![DOWNLOAD_DIR.to_owned(), stall.to_string()];
    for u in &d.urls {
        args.push(env_escape(u.url()));
        args.push(env_escape(u.file_name()?));
        args.push(u.sha256().map(str::to_ascii_lowercase).unwrap_or_default());
    }
    Some(Container {
        name: volume.to_owned(),
        image: Some(d.image.clone()),
        command: Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            DOWNLOAD_SCRIPT.to_owned(),
            DOWNLOAD_SCRIPT_NAME.to_owned(),
        ]),
        args: Some(args),
        volume_mounts: Some(vec![VolumeMount {
            name: volume.to_owned(),
            mount_path: DOWNLOAD_DIR.to_owned(),
            ..VolumeMount::default()
        }]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(d.run_as_user.unwrap_or(DEFAULT_DOWNLOAD_USER)),
            run_as_group: Some(d.run_as_group.unwrap_or(DEFAULT_DOWNLOAD_GROUP)),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_leaves_the_script_as_written() {
        // It reads `$(NAME)` as a variable reference and `$$` as an escaped `$`.
        assert!(!DOWNLOAD_SCRIPT.contains("$("), "{DOWNLOAD_SCRIPT}");
        assert!(!DOWNLOAD_SCRIPT.contains("$$"), "{DOWNLOAD_SCRIPT}");
    }
}
