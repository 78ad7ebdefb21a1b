//! The Spark tier: what the engine writes, given to Apache Spark's own `spark-submit`
//! (each pyspark venv of `SPARK_ADMISSION_E2E_PYSPARK`), with no cluster. It runs in CI on
//! every machine; `SPARK_ADMISSION_SPARK=required` makes a missing venv fail it.

mod prometheus;
mod spark_conf;

use spark_admission_testkit::pyspark;
use spark_admission_testkit::tier::{self, plain, Asset, Suite};

fn main() {
    let spark = Asset {
        tier: "spark (spark-submit)",
        found: pyspark::venvs(),
        required: tier::required("SPARK_ADMISSION_SPARK"),
        fill: "eval \"$(bash scripts/e2e-assets.sh)\" && cargo test --test spark",
    };
    Suite::new()
        .plain(vec![plain(
            "spark_conf::the_kubelet_expansion_here_is_the_one_kubernetes_documents",
            spark_conf::the_kubelet_expansion_here_is_the_one_kubernetes_documents,
        )])
        .with(&spark, |a| {
            vec![
                a.test(
                    "spark_conf::spark_conf_reaches_real_spark_submit_as_defaults",
                    spark_conf::spark_conf_reaches_real_spark_submit_as_defaults,
                ),
                a.test(
                    "prometheus::metric_names_are_the_same_for_every_run",
                    prometheus::metric_names_are_the_same_for_every_run,
                ),
                a.test(
                    "prometheus::spark_resolves_references_inside_the_app_name_in_the_metrics_namespace",
                    prometheus::spark_resolves_references_inside_the_app_name_in_the_metrics_namespace,
                ),
            ]
        })
        .run()
}
