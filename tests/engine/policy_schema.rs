//! The shipped schema, the policy loader's errors, and the `check-policies` / `explain` CLI.

use std::process::Command;

use spark_admission::policy::{parse_documents, schema_json, PolicySource};

const BIN: &str = env!("CARGO_BIN_EXE_spark-admission");

#[test]
fn shipped_schema_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/schema.json");
    let shipped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        shipped == schema_json(),
        "policies/schema.json is stale: run `cargo run -- schema > policies/schema.json`"
    );
}

#[test]
fn errors_name_the_document_the_json_path_and_what_was_expected() {
    let text = "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: ok}\nspec: {namespaces: [a]}\n---\napiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: broken}\nspec:\n  namespaces: [a]\n  executor:\n    tolerations: [{key: a, tolerationSeconds: soon}]\n";
    let errors = parse_documents(&PolicySource("team.yaml".into()), text).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(e.origin, "team.yaml#2 (broken)");
    assert_eq!(e.path, "/spec/executor/tolerations/0/tolerationSeconds");
    assert!(e.message.contains("integer"), "{}", e.message);
}

#[test]
fn unknown_fields_wrong_kinds_and_bad_regexes_are_rejected() {
    let cases = [
        ("kind: SparkPodPolicy\napiVersion: spark-admission.io/v1alpha1\nmetadata: {name: a}\nspec: {namespaces: [a], colour: blue}", "/spec", "colour"),
        ("kind: Pod\napiVersion: spark-admission.io/v1alpha1\nmetadata: {name: a}\nspec: {namespaces: [a]}", "/kind", "SparkPodPolicy"),
        ("kind: SparkPodPolicy\napiVersion: spark-admission.io/v1alpha1\nmetadata: {name: a}\nspec: {namespaces: [a], selector: {appName: \"([\"}}", "/spec/selector/appName", "regular expression"),
        ("kind: SparkPodPolicy\napiVersion: spark-admission.io/v1alpha1\nmetadata: {name: a}\nspec: {namespaces: [a], all: {resources: {force: {limits: {cpu: lots}}}}}", "/spec/all/resources/force/limits/cpu", "quantity"),
        ("kind: SparkPodPolicy\napiVersion: spark-admission.io/v1alpha1\nmetadata: {name: a}\nspec: {namespaces: [a], all: {labels: {on: true}}}", "/spec/all/labels", "quote"),
        ("a: [unclosed", "/", "YAML"),
    ];
    // The YAML 1.2 reader (crate::yaml) reads `yes`/`on` as the strings they look like.
    let yes = parse_documents(
        &PolicySource("t.yaml".into()),
        "kind: SparkPodPolicy\napiVersion: spark-admission.io/v1alpha1\nmetadata: {name: a}\nspec: {namespaces: [a], all: {labels: {on: yes}}}",
    )
    .unwrap();
    assert!(
        yes[0].canonical.contains(r#""labels":{"on":"yes"}"#),
        "{}",
        yes[0].canonical
    );
    for (text, path, needle) in cases {
        let errors = parse_documents(&PolicySource("t.yaml".into()), text).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.path.starts_with(path) && e.message.contains(needle)),
            "{text}\n=> {errors:?}"
        );
    }
}

#[test]
fn download_sources_are_checked_at_their_own_path() {
    let doc = |download: &str| {
        format!("kind: SparkPodPolicy\napiVersion: spark-admission.io/v1alpha1\nmetadata: {{name: a}}\nspec:\n  namespaces: [a]\n  all:\n    dependencies:\n    - name: aws\n      source:\n        download: {download}\n")
    };
    let at = "/spec/all/dependencies/0/source/download";
    let cases = [
        (
            "{urls: [{url: 'https://r.example/a.jar', sha256: abc}]}",
            format!("{at}/urls/0/sha256"),
            "does not match",
        ),
        (
            "{urls: [{url: 'https://r.example/a.jar', sha: abc}]}",
            format!("{at}/urls/0"),
            "sha",
        ),
        (
            "{urls: [{sha256: abc}]}",
            format!("{at}/urls/0"),
            "\"url\" is a required property",
        ),
        (
            "{urls: ['ftp://r.example/a.jar']}",
            format!("{at}/urls/0"),
            "does not match",
        ),
        (
            "{urls: [{url: 'https://r.example/'}]}",
            format!("{at}/urls/0/url"),
            "does not match",
        ),
        ("{urls: [7]}", format!("{at}/urls/0"), "is not of type"),
        (
            "{urls: ['https://r.example/a.jar'], runAsUser: 0}",
            format!("{at}/runAsUser"),
            "minimum",
        ),
        (
            "{urls: ['https://r.example/a.jar'], runAsGroup: -1}",
            format!("{at}/runAsGroup"),
            "minimum",
        ),
        (
            "{urls: ['https://r.example/v1/a.jar', {url: 'https://r.example/v2/a.jar?x=1'}]}",
            format!("{at}/urls/1/url"),
            "would be saved as \"a.jar\", like urls/0",
        ),
        (
            "{urls: ['https://r.example/a.jar']}\n        configMap: {name: jars}",
            "/spec/all/dependencies/0/source".to_owned(),
            "has more than 1 property (set exactly one of them)",
        ),
        (
            "{urls: ['https://r.example/lib/..']}",
            format!("{at}/urls/0"),
            "has no file name",
        ),
    ];
    for (download, path, needle) in cases {
        let text = doc(download);
        let errors = parse_documents(&PolicySource("t.yaml".into()), &text).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.path == path && e.message.contains(needle)),
            "{download}: expected {path} ({needle})\n=> {errors:?}"
        );
    }
    // Both forms in one list, a checksum in either case: accepted.
    let ok = doc("{urls: ['https://r.example/a.jar', {url: 'https://r.example/b.jar', sha256: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08}], runAsUser: 1000, runAsGroup: 0}");
    parse_documents(&PolicySource("t.yaml".into()), &ok).unwrap_or_else(|e| panic!("{e:?}"));
}

/// What the API server refuses in a pod, refused in the policy that would write it: else
/// every pod the policy patches would be refused (or, in a selector, none would match).
#[test]
fn names_labels_and_tolerations_the_api_server_refuses_are_refused_at_load() {
    let doc = |section: &str| {
        format!("kind: SparkPodPolicy\napiVersion: spark-admission.io/v1alpha1\nmetadata: {{name: a}}\nspec:\n  namespaces: [a]\n{section}\n")
    };
    let all = |patch: &str| doc(&format!("  all: {patch}"));
    let cases = [
        (all("{labels: {\"cost center\": x}}"), "/spec/all/labels/cost center", "key \"cost center\" is not valid"),
        (all("{labels: {team: \"data platform\"}}"), "/spec/all/labels/team", "not a valid label value"),
        (all(&format!("{{labels: {{team: {}}}}}", "v".repeat(64))), "/spec/all/labels/team", "63 characters or less"),
        (all("{annotations: {\"Bad Key!\": x}}"), "/spec/all/annotations/Bad Key!", "is not valid"),
        (all("{nodeSelector: {pool: \"a b\"}}"), "/spec/all/nodeSelector/pool", "not a valid label value"),
        (all("{nodeSelector: {pool: \"${namespace}\"}}"), "/spec/all/nodeSelector/pool", "not a valid label value"),
        (all("{priorityClassName: High_Priority}"), "/spec/all/priorityClassName", "not a valid name"),
        (all("{runtimeClassName: Nvidia}"), "/spec/all/runtimeClassName", "not a valid name"),
        (all("{volumes: [{volume: {name: Scratch_Space, emptyDir: {}}, mount: {mountPath: /s}}]}"), "/spec/all/volumes/0/volume/name", "volume name"),
        (all("{sidecars: [{name: Log_Shipper, image: x}]}"), "/spec/all/sidecars/0/name", "container name"),
        (all("{initContainers: [{name: a.b, image: x}]}"), "/spec/all/initContainers/0/name", "container name"),
        (all("{tolerations: [{key: gpu, operator: Exist}]}"), "/spec/all/tolerations/0", "operator \"Exist\""),
        (all("{tolerations: [{key: gpu, operator: Exists, value: \"yes\"}]}"), "/spec/all/tolerations/0", "no value"),
        (all("{tolerations: [{operator: Equal, value: x}]}"), "/spec/all/tolerations/0", "without a key"),
        (all("{tolerations: [{key: gpu, effect: NoScheduled}]}"), "/spec/all/tolerations/0", "effect \"NoScheduled\""),
        (all("{tolerations: [{key: gpu, effect: NoSchedule, tolerationSeconds: 30}]}"), "/spec/all/tolerations/0", "NoExecute"),
        (all("{tolerations: [{key: \"bad key\", operator: Exists}]}"), "/spec/all/tolerations/0", "key \"bad key\""),
        (doc("  selector: {matchLabels: {\"team \": data}}"), "/spec/selector/matchLabels/team ", "match no pod"),
        (doc("  selector: {matchLabels: {team: \"data platform\"}}"), "/spec/selector/matchLabels/team", "match no pod"),
    ];
    for (text, path, needle) in &cases {
        let errors = parse_documents(&PolicySource("t.yaml".into()), text).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.path == *path && e.message.contains(needle)),
            "{text}\n=> {errors:?}"
        );
    }
    // What the API server takes passes: prefixed keys, empty and upper-case values,
    // annotation keys with capitals (checked lower-cased), label values from variables
    // (known per pod), tolerations in every valid form.
    let good = all(concat!(
        "{labels: {app.kubernetes.io/part-of: Spark_Jobs, empty: \"\", team: \"team-${namespace}\"}, ",
        "annotations: {Example.COM/Owner: \"any text at all\"}, ",
        "nodeSelector: {kubernetes.io/arch: amd64}, priorityClassName: spark.high, schedulerName: My_Scheduler, ",
        "volumes: [{volume: {name: scratch-1, emptyDir: {}}, mount: {mountPath: /s}}], ",
        "sidecars: [{name: log-shipper, image: x}], ",
        "tolerations: [{operator: Exists}, {key: gpu, value: \"\"}, {key: a, operator: Equal, value: b, effect: NoExecute, tolerationSeconds: 30}, {key: c, operator: \"\", effect: PreferNoSchedule}]}",
    ));
    let loaded = parse_documents(&PolicySource("t.yaml".into()), &good);
    assert!(loaded.is_ok(), "{good}\n=> {loaded:?}");
}

/// What a real kube-apiserver 1.32 said of each value of `pod_fields::corpus` in a pod
/// (recorded by `tests/e2e/names.rs`): the loader takes a policy writing it exactly when
/// the API server took the pod.
#[test]
fn the_loader_agrees_with_the_recorded_api_server_on_every_name_and_label() {
    use spark_admission_testkit::pod_fields;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/apiserver/names/verdicts/pod-fields.json");
    let recorded: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let cases: Vec<(String, serde_json::Value)> = recorded
        .iter()
        .map(|r| (r["field"].as_str().unwrap().to_owned(), r["value"].clone()))
        .collect();
    let corpus: Vec<(String, serde_json::Value)> = pod_fields::corpus()
        .into_iter()
        .map(|(f, v)| (f.to_owned(), v))
        .collect();
    assert_eq!(
        cases, corpus,
        "the corpus changed: record it again (README, \"The API-server tier\")"
    );
    assert!(recorded.iter().any(|r| r["accepted"] == true));
    assert!(recorded.iter().any(|r| r["accepted"] == false));
    for r in &recorded {
        let (field, value) = (r["field"].as_str().unwrap(), &r["value"]);
        let loaded = parse_documents(
            &PolicySource("names.yaml".into()),
            &pod_fields::policy(field, value),
        );
        assert_eq!(
            loaded.is_ok(),
            r["accepted"] == true,
            "{field} {value}: the API server said {:?}; the loader {loaded:?}",
            r["apiServer"]
        );
    }
}

#[test]
fn check_policies_accepts_the_examples_and_rejects_a_broken_file() {
    let ok = Command::new(BIN)
        .args(["check-policies", "policies"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: x}\nspec: {namespaces: []}\n").unwrap();
    let out = Command::new(BIN)
        .arg("check-policies")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("bad.yaml#1 (x): /spec/namespaces:"),
        "{stdout}"
    );
}

#[test]
fn explain_exit_codes_follow_the_verdict() {
    let root = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(root)
            .output()
            .unwrap()
    };

    let allowed = run(&[
        "explain",
        "--output",
        "patch",
        "tests/fixtures/admission/mutate-driver-scala-sparkpi.json",
    ]);
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let patch: serde_json::Value = serde_json::from_slice(&allowed.stdout).unwrap();
    assert!(!patch.as_array().unwrap().is_empty());

    let denied = run(&[
        "explain",
        "tests/fixtures/admission/mutate-driver-rich.json",
    ]);
    assert_eq!(denied.status.code(), Some(1));
    let table = String::from_utf8_lossy(&denied.stdout);
    assert!(
        table.contains("DENY") && table.contains("guardrails"),
        "{table}"
    );
    assert!(
        table.contains("team-defaults") && table.contains("labels[cost-center]"),
        "{table}"
    );

    let bad = run(&["explain", "Cargo.toml"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("error:"));

    let pod = run(&[
        "explain",
        "--output",
        "pod",
        "--namespace",
        "team-x",
        "tests/fixtures/spark/executor-rich-1.json",
    ]);
    assert_eq!(pod.status.code(), Some(0));
    let mutated: serde_json::Value = serde_json::from_slice(&pod.stdout).unwrap();
    assert!(mutated["spec"]["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["key"] == "cloud.example.com/spot"));
}

#[test]
fn explain_says_which_namespace_it_used_when_the_input_names_none() {
    let root = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(root)
            .output()
            .unwrap()
    };
    // A pod as spark-submit builds it, before the API server: no namespace.
    let pod = "tests/fixtures/spark/driver-pyspark-pi.json";

    let table = run(&["explain", pod]);
    let stdout = String::from_utf8_lossy(&table.stdout);
    let stderr = String::from_utf8_lossy(&table.stderr);
    assert!(
        stdout.contains("namespace: default (assumed: the input names none)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("the input names no namespace")
            && stderr.contains("\"default\"")
            && stderr.contains("--namespace"),
        "{stderr}"
    );

    // Patch output keeps stdout for the patch; the note goes to stderr.
    let patch = run(&["explain", "--output", "patch", pod]);
    assert!(serde_json::from_slice::<serde_json::Value>(&patch.stdout).is_ok());
    assert!(String::from_utf8_lossy(&patch.stderr).contains("the input names no namespace"));

    // Named by the flag or by the input: no note.
    let flagged = run(&["explain", "--namespace", "spark-jobs", pod]);
    assert!(String::from_utf8_lossy(&flagged.stdout).contains("namespace: spark-jobs   role"));
    assert!(!String::from_utf8_lossy(&flagged.stderr).contains("names no namespace"));
    let review = run(&[
        "explain",
        "tests/fixtures/admission/mutate-driver-scala-sparkpi.json",
    ]);
    assert!(String::from_utf8_lossy(&review.stdout).contains("namespace: spark-jobs   role"));
    assert!(!String::from_utf8_lossy(&review.stderr).contains("names no namespace"));
}
