//! The guest agent's wire format: requests as JSON lines out, and a tolerant reader for what
//! comes back. The reader skips garbage, treats the 0xFF byte (the sentinel qemu-ga sends
//! before a `guest-sync-delimited` reply, never valid in UTF-8 JSON) as "start afresh",
//! ignores unknown fields and messages that are neither a reply nor an error, and survives
//! replies split across reads. Owns framing only: it opens no sockets and knows no command
//! beyond building the sync request.

use serde::Serialize;
use serde_json::Value;

/// The byte qemu-ga sends before a `guest-sync-delimited` reply, and that a client sends
/// before the request so the agent drops a half-read request.
pub const SENTINEL: u8 = 0xFF;

/// One reply from the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `{"return": VALUE}`
    Return(Value),
    /// `{"error": {"class": …, "desc": …}}`
    Error { class: String, desc: String },
}

/// Bytes in, whole messages out.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
    /// The buffer ends in an unfinished object: no use parsing again before a `}` (or a
    /// sentinel) arrives.
    waiting: bool,
}

impl Reader {
    pub fn push(&mut self, data: &[u8]) {
        if self.waiting && data.iter().any(|&b| b == b'}' || b == SENTINEL) {
            self.waiting = false;
        }
        self.buf.extend_from_slice(data);
    }

    /// Forgets everything buffered (after the connection was replaced).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.waiting = false;
    }

    /// The next whole message, or `None` when more bytes are needed.
    pub fn next_message(&mut self) -> Option<Message> {
        if self.waiting {
            return None;
        }
        loop {
            let Some(start) = self.buf.iter().position(|&b| b == b'{') else {
                // Nothing here can start a message.
                self.buf.clear();
                return None;
            };
            // A sentinel ends whatever began before it.
            let end = self.buf[start..]
                .iter()
                .position(|&b| b == SENTINEL)
                .map_or(self.buf.len(), |at| start + at);
            let mut values =
                serde_json::Deserializer::from_slice(&self.buf[start..end]).into_iter::<Value>();
            match values.next() {
                Some(Ok(value)) => {
                    let used = start + values.byte_offset();
                    self.buf.drain(..used);
                    if let Some(message) = classify(value) {
                        return Some(message);
                    }
                }
                Some(Err(error)) if error.is_eof() => {
                    if end == self.buf.len() {
                        self.buf.drain(..start);
                        self.waiting = true;
                        return None;
                    }
                    // Cut short by a sentinel: the agent started afresh.
                    self.buf.drain(..=end);
                }
                // Not JSON from this `{`: skip it and look for the next.
                Some(Err(_)) => {
                    self.buf.drain(..=start);
                }
                None => {
                    self.buf.drain(..start);
                    return None;
                }
            }
        }
    }
}

fn classify(value: Value) -> Option<Message> {
    let Value::Object(mut fields) = value else {
        return None;
    };
    if let Some(value) = fields.remove("return") {
        return Some(Message::Return(value));
    }
    let error = fields.remove("error")?;
    let text = |key: &str| error.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(Message::Error {
        class: text("class").unwrap_or_else(|| "GenericError".to_owned()),
        desc: text("desc").unwrap_or_else(|| error.to_string()),
    })
}

#[derive(Serialize)]
struct Request<'a, A: Serialize> {
    execute: &'a str,
    arguments: &'a A,
}

/// `{"execute": NAME, "arguments": ARGS}` and a newline.
pub fn request<A: Serialize>(name: &str, arguments: &A) -> Result<Vec<u8>, serde_json::Error> {
    let mut line = serde_json::to_vec(&Request { execute: name, arguments })?;
    line.push(b'\n');
    Ok(line)
}

/// The sentinel, then `guest-sync-delimited` with `id` (qapi-qga has no type for it).
#[must_use]
pub fn sync_request(id: u32) -> Vec<u8> {
    let mut line = vec![SENTINEL];
    line.extend_from_slice(
        format!("{{\"execute\":\"guest-sync-delimited\",\"arguments\":{{\"id\":{id}}}}}\n")
            .as_bytes(),
    );
    line
}

/// Whether `message` is the reply to the sync request with `id`.
#[must_use]
pub fn is_sync_reply(message: &Message, id: u32) -> bool {
    matches!(message, Message::Return(Value::Number(n)) if n.as_u64() == Some(u64::from(id)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn drain(reader: &mut Reader) -> Vec<Message> {
        std::iter::from_fn(|| reader.next_message()).collect()
    }

    #[test]
    fn garbage_sentinels_and_unknown_fields_are_skipped() {
        let mut reader = Reader::default();
        let mut bytes = b"\x00\x01garbage }} {not json} {\"return\": {\"half\"".to_vec();
        bytes.push(SENTINEL);
        bytes.extend_from_slice(b"{\"return\": 42, \"future-field\": [1, 2]}\n");
        bytes.extend_from_slice(b"{\"event\": \"SOMETHING\", \"data\": {}}\n");
        bytes.extend_from_slice(
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\", \"extra\": 1}}\n",
        );
        bytes.extend_from_slice(b"\xff\xfe{\"return\": {\"pid\": 7, \"new\": true}}\n");
        reader.push(&bytes);
        assert_eq!(
            drain(&mut reader),
            vec![
                Message::Return(json!(42)),
                Message::Error { class: "GenericError".into(), desc: "no".into() },
                Message::Return(json!({"pid": 7, "new": true})),
            ]
        );
        let status: qapi_qga::GuestExec =
            serde_json::from_value(json!({"pid": 7, "new": true})).unwrap();
        assert_eq!(status.pid, 7);
    }

    #[test]
    fn a_reply_split_anywhere_comes_out_whole() {
        let mut whole = vec![SENTINEL];
        whole.extend_from_slice(b"{\"return\": 12345}\n{\"return\": {\"count\": 3, \"eof\": false, \"buf-b64\": \"YWJj\"}}\n");
        for cut in 0..whole.len() {
            let mut reader = Reader::default();
            reader.push(&whole[..cut]);
            let mut got = drain(&mut reader);
            reader.push(&whole[cut..]);
            got.extend(drain(&mut reader));
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert!(is_sync_reply(&got[0], 12345));
            let read: qapi_qga::GuestFileRead = match &got[1] {
                Message::Return(value) => serde_json::from_value(value.clone()).unwrap(),
                other => panic!("{other:?}"),
            };
            assert_eq!(read.buf_b64, b"abc");
        }
    }

    #[test]
    fn an_unfinished_object_cut_by_a_sentinel_is_dropped() {
        let mut reader = Reader::default();
        reader.push(b"{\"return\": {\"pid\":");
        assert_eq!(reader.next_message(), None);
        reader.push(b"\xff{\"return\": 9}\n");
        assert_eq!(drain(&mut reader), vec![Message::Return(json!(9))]);
        // Garbage that looks like an object's start does not swallow the reply after it.
        reader.push(b"{\"abc{\"return\": 1}\n{\"return\": 2}\n");
        assert_eq!(drain(&mut reader), vec![Message::Return(json!(1)), Message::Return(json!(2))]);
    }

    #[test]
    fn requests_are_json_lines() {
        let line = request("guest-exec-status", &qapi_qga::guest_exec_status { pid: 5 }).unwrap();
        assert_eq!(line, b"{\"execute\":\"guest-exec-status\",\"arguments\":{\"pid\":5}}\n");
        let sync = sync_request(77);
        assert_eq!(sync[0], SENTINEL);
        let value: Value = serde_json::from_slice(&sync[1..]).unwrap();
        assert_eq!(value, json!({"execute": "guest-sync-delimited", "arguments": {"id": 77}}));
    }
}
