use super::*;

#[test]
fn families_of_trusted_text() {
    let text =
        "# HELP a A.\n# TYPE a counter\na_total 1\na_created 2\nb 1\nb 2\n# TYPE c gauge\nc 3\n";
    let mut seen = Vec::new();
    families(text.as_bytes(), |name, lines| {
        seen.push(format!("{}:{}", &text[name], text[lines].lines().count()))
    });
    assert_eq!(seen, ["a:4", "b:2", "c:2"]);
}

#[test]
fn reasons() {
    assert_eq!(
        reason(&Violation::Foreign("x".into())).as_str(),
        "foreign_family"
    );
    assert_eq!(reason(&Violation::NotUtf8).as_str(), "invalid_output");
}
