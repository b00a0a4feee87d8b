//! Named roles (P13) in the in-memory network: placement, holds, moves.

mod common;

use cluster_mode_core::{Config, Input, Placement};
use common::net::Net;

fn declare(net: &mut Net, slot: usize, n: usize) {
    let roles = (0..n)
        .map(|i| (format!("shard-{i}"), Placement::Any))
        .collect();
    net.input(slot, Input::DeclareRoles(roles));
}

#[test]
fn declared_roles_are_placed() {
    let mut net = Net::with_nodes(7, Config::fast_test(), 3);
    for s in 0..3 {
        declare(&mut net, s, 8);
    }
    net.run_until_settled(5_000).expect("settles");
    net.run_for(1_000);
    for s in 0..3 {
        let now = net.local(s, net.now);
        let st = net.nodes[s].core.status(now);
        eprintln!(
            "n{s}: table {:?} owned {:?} hold {:?}",
            st.roles.len(),
            st.owned_roles.iter().map(|o| &o.role).collect::<Vec<_>>(),
            st.role_hold_until
        );
    }
}
