//! YAML texts that try to make a reader do unbounded work: each must end in an error (the
//! policy loader's, `/validate-policy`'s, a reload's), quickly, without a panic or a stack
//! overflow. Shared by the YAML reader's tests and the tiers that serve it.

/// `(what it is, the text)`.
pub fn texts() -> Vec<(&'static str, String)> {
    // Billion laughs: nine levels of nine aliases (9^9 values once expanded).
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let previous = format!("*a{}", i - 1);
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", vec![previous; 9].join(", ")));
    }
    // Many aliases of one large anchor: quadratic rather than exponential.
    let items: Vec<String> = (0..2000).map(|i| format!("v{i}")).collect();
    let wide = format!(
        "big: &big [{}]\nall: [{}]\n",
        items.join(", "),
        vec!["*big"; 2000].join(", ")
    );
    vec![
        ("alias bomb", bomb),
        ("quadratic aliases", wide),
        ("10,000 open [", "[".repeat(10_000)),
        (
            "10,000 nested flow sequences",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        ("10,000 open {a: ", "{a: ".repeat(10_000)),
        // Block sequences nested on one line (`- - - x`); 10,000 nested block mappings
        // would need 50 MB of indentation.
        (
            "10,000 nested block sequences",
            format!("{}x\n", "- ".repeat(10_000)),
        ),
        (
            "1,000 nested block mappings",
            (0..1_000)
                .map(|i| format!("{}a:\n", " ".repeat(i)))
                .collect(),
        ),
    ]
}
