//! The documentation names tests, which must exist, and is complete without anything from
//! outside the repository.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Where a row's "fixtures"/"e2e"/... prefix says the test lives.
fn file_for(prefix: &str) -> Option<&'static str> {
    Some(match prefix {
        "fixtures" => "tests/tests/fixtures.rs",
        "e2e" => "tests/tests/e2e.rs",
        "icmp" => "tests/tests/icmp_error_fixtures.rs",
        "vpn" => "tests/tests/vpn_fixtures.rs",
        "leak" => "tests/tests/leak_e2e.rs",
        "egress" => "tests/tests/egress_fixtures.rs",
        "malformed" => "tests/tests/malformed_fixtures.rs",
        "model" => "tests/tests/model_fixtures.rs",
        "expiry" => "tests/tests/expiry_fixtures.rs",
        "robustness" => "tests/tests/robustness_e2e.rs",
        "nat-ctl" => "nat-ctl/src",
        "nat-common" => "nat-common/src",
        _ => return None,
    })
}

fn sources(path: &Path) -> String {
    if path.is_dir() {
        std::fs::read_dir(path)
            .unwrap()
            .map(|e| sources(&e.unwrap().path()))
            .collect()
    } else if path.extension().is_some_and(|e| e == "rs") {
        std::fs::read_to_string(path).unwrap()
    } else {
        String::new()
    }
}

#[test]
fn every_test_named_in_rfc_compliance_exists() {
    let doc = std::fs::read_to_string(root().join("docs/rfc-compliance.md")).unwrap();
    let mut checked = 0;
    for line in doc.lines().filter(|l| l.starts_with("| ")) {
        let test_cell = line.trim_end_matches('|').rsplit('|').next().unwrap();
        let mut prefix = None;
        for (i, part) in test_cell.split('`').enumerate() {
            if i % 2 == 0 {
                prefix = part.split_whitespace().last().and_then(file_for).or(prefix);
                continue;
            }
            let file =
                prefix.unwrap_or_else(|| panic!("no file prefix before `{part}` in: {line}"));
            let name = part.rsplit("::").next().unwrap();
            let src = sources(&root().join(file));
            assert!(
                src.contains(&format!("fn {name}(")),
                "docs/rfc-compliance.md names `{part}`, which is not a test in {file}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} test names found");
}

/// The repository is complete on its own: nothing in it points to a design document outside
/// it (docs/architecture.md holds the decisions and contracts).
#[test]
fn nothing_points_outside_the_repository_for_its_design() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name();
            if name == "target" || name == ".git" {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else if p
                .extension()
                .is_some_and(|x| x == "rs" || x == "md" || x == "toml")
            {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(root(), &mut files);
    let outside = ["DESIGN", ".md"].concat();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(
            !text.contains(&outside),
            "{} points to {outside}, which is not in the repository",
            f.display()
        );
    }
}
