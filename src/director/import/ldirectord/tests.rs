use super::*;

fn import(text: &str) -> Imported {
    ldirectord_text_to_toml("ldirectord.cf", text, "eth0").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn a_virtual_section_imports() {
    let out = import("virtual=192.0.2.100:80\n\treal=198.51.100.2:80 gate\n");
    assert!(out.toml.contains("vip = \"192.0.2.100\""), "{}", out.toml);
}
