//! Agent frames as each side decodes them: `protocol::decode::<AgentToServer>` (the server's `/ws/agent`, `server/src/http/ws_agent.rs`) and `protocol::decode::<ServerToAgent>` (the agent's `session.rs`); a frame that decodes encodes to text that decodes to the same message
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::agent::{AgentToServer, ServerToAgent};

fuzz_target!(|data: &[u8]| {
    // A WebSocket text frame is UTF-8 by the time either side sees it.
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(frame) = protocol::decode::<AgentToServer>(text) {
        assert_eq!(protocol::decode::<AgentToServer>(&protocol::encode(&frame)).as_ref(), Ok(&frame));
        if let AgentToServer::Reply(reply) = &frame {
            let _ = reply.claimed_command_id();
        }
    }
    if let Ok(frame) = protocol::decode::<ServerToAgent>(text) {
        assert_eq!(protocol::decode::<ServerToAgent>(&protocol::encode(&frame)).as_ref(), Ok(&frame));
    }
});
