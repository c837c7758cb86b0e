//! The same JSON-RPC handling over newline-delimited JSON (MCP stdio transport). Blocking I/O, no runtime.

use std::io::{self, BufRead, Write};

use super::{Message, parse, respond};

/// Reads one message per line from `input` and writes each reply, followed by `\n`, to `output` until end of input.
pub fn serve(mut input: impl BufRead, mut output: impl Write) -> io::Result<()> {
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let message = line.trim_ascii();
        if message.is_empty() {
            continue;
        }
        let reply = match parse(message) {
            Message::Request { id, method, params } => respond(id, &method, params),
            Message::Invalid(reply) => reply,
            Message::Notification { .. } | Message::Response => continue,
        };
        output.write_all(&reply)?;
        output.write_all(b"\n")?;
        output.flush()?;
    }
}
