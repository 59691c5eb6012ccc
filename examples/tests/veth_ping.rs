//! The README's demonstration, run as a test.

#[test]
fn veth_ping_demo_passes_every_step() {
    if !cnm_netns::testing::require_root("veth_ping_demo_passes_every_step") {
        return;
    }
    let steps = cnm_examples::veth_ping::run(|_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(steps.len(), 7);
    assert_eq!(steps.iter().filter(|s| s.what.starts_with("ICMP echo")).count(), 4);
}
