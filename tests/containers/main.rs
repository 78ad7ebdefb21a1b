//! The containers tier: what the engine adds to a pod as a container, run the way a kubelet
//! would run it, with this machine's runc, curl and busybox (no cluster). CI installs them and
//! requires the tier (`SPARK_ADMISSION_CONTAINERS=required`); elsewhere a missing tool skips
//! it with one line.

#[path = "../engine/engine_support.rs"]
mod engine_support;

mod download;

use spark_admission_testkit::tier::{self, plain, Asset, Suite};

fn main() {
    let tools = Asset {
        tier: "containers (runc, curl, busybox)",
        found: download::tools(),
        required: tier::required("SPARK_ADMISSION_CONTAINERS"),
        fill: "run as root with Debian's runc, curl and busybox installed, then cargo test --test containers",
    };
    Suite::new()
        .plain(vec![plain(
            "download::kubelet_expansion_as_specified",
            download::kubelet_expansion_as_specified,
        )])
        .with(&tools, |a| {
            vec![
                a.test(
                    "download::every_url_fine_gives_exit_0_and_every_file_readable_by_spark",
                    download::every_url_fine_gives_exit_0_and_every_file_readable_by_spark,
                ),
                a.test(
                    "download::one_url_answering_404_fails_the_container_wherever_it_is_in_the_list",
                    download::one_url_answering_404_fails_the_container_wherever_it_is_in_the_list,
                ),
                a.test(
                    "download::a_checksum_mismatch_fails_the_container",
                    download::a_checksum_mismatch_fails_the_container,
                ),
                a.test(
                    "download::an_empty_download_fails_the_container",
                    download::an_empty_download_fails_the_container,
                ),
                a.test(
                    "download::a_tenant_variable_cannot_change_what_the_container_runs",
                    download::a_tenant_variable_cannot_change_what_the_container_runs,
                ),
                a.test(
                    "download::a_stalled_repository_fails_the_container_after_the_stall_timeout",
                    download::a_stalled_repository_fails_the_container_after_the_stall_timeout,
                ),
            ]
        })
        .run()
}
