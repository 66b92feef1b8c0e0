//! The append path and the live connection as bytes, for a socket driven by someone else
//! (Node's event loop, see the binding's `event_loop` module): a connection opened and readied
//! here (AUTH, SELECT, the append script loaded), `EVALSHA` calls of `append.lua` encoded into
//! a buffer, and RESP2 replies decoded as bytes arrive with the `redis-protocol` crate's
//! decoder. Nothing here reads or writes the socket once it is handed over.

use std::time::Duration;

use redis::{Cmd, ConnectionAddr, IntoConnectionInfo, Value};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::append::{append_args, append_script};
use super::reply::{parse_append_reply, unexpected};
use crate::error::{Error, ErrorCode, Result};
use crate::event::PreparedEvent;
use crate::keys::Keys;
use crate::store::GroupResults;

/// Most events in one `EVALSHA` of the append script on a wire connection: larger batches go
/// out as several calls in one write, so Redis runs one while the next is still arriving.
pub const WIRE_GROUP_EVENTS: usize = 64;

/// What a wire connection needs to reach one Redis and append there.
#[derive(Clone)]
pub struct Wire {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    keys: Keys,
    max_len: Option<u64>,
    sha: String,
    script: &'static str,
    timeout: Duration,
}

impl Wire {
    /// The wire settings for `url`, or `None` when its connection cannot be a plain socket
    /// (TLS, a Unix socket): those stay on the Tokio connection.
    pub fn for_url(url: &str, keys: Keys, max_len: Option<u64>, timeout: Duration) -> Option<Wire> {
        let info = url.into_connection_info().ok()?;
        let ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
            return None;
        };
        let settings = info.redis_settings();
        let script = append_script();
        Some(Wire {
            host,
            port,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            db: settings.db(),
            keys,
            max_len,
            sha: redis::Script::new(script).get_hash().to_owned(),
            script,
            timeout,
        })
    }

    /// The bound on every call (`timeoutMs`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Open a connection and ready it: AUTH and SELECT as the url says, the append script
    /// loaded. Returns a non-blocking socket. Fails with `STORE_UNAVAILABLE` or `TIMEOUT`.
    pub async fn connect(&self) -> Result<std::net::TcpStream> {
        match tokio::time::timeout(self.timeout, self.connect_unbounded()).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorCode::Timeout,
                format!(
                    "Redis at {}:{} did not answer within {} ms",
                    self.host,
                    self.port,
                    self.timeout.as_millis()
                ),
            )),
        }
    }

    async fn connect_unbounded(&self) -> Result<std::net::TcpStream> {
        let unreachable = |e: std::io::Error| {
            Error::new(
                ErrorCode::StoreUnavailable,
                format!("Redis at {}:{} is unreachable ({e})", self.host, self.port),
            )
        };
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(unreachable)?;
        stream.set_nodelay(true).map_err(unreachable)?;
        let mut out = Vec::new();
        let mut expected = 0;
        if let Some(password) = &self.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &self.username {
                auth.arg(user);
            }
            auth.arg(password).write_packed_command(&mut out);
            expected += 1;
        }
        if self.db != 0 {
            redis::cmd("SELECT")
                .arg(self.db)
                .write_packed_command(&mut out);
            expected += 1;
        }
        self.encode_script_load(&mut out);
        expected += 1;
        stream.write_all(&out).await.map_err(unreachable)?;
        let mut reader = ReplyReader::default();
        let mut buf = vec![0u8; 4096];
        let mut got = 0;
        while got < expected {
            match reader.next_reply()? {
                Some(Err(e)) => {
                    return Err(Error::new(
                        ErrorCode::StoreUnavailable,
                        format!("Redis refused the connection's setup ({e})"),
                    ))
                }
                Some(Ok(_)) => got += 1,
                None => {
                    let n = stream.read(&mut buf).await.map_err(unreachable)?;
                    if n == 0 {
                        return Err(unreachable(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    reader.feed(&buf[..n]);
                }
            }
        }
        let std = stream.into_std().map_err(unreachable)?;
        std.set_nonblocking(true).map_err(unreachable)?;
        Ok(std)
    }

    /// Append one `EVALSHA` of the append script for `groups` to `out` (at most
    /// `WIRE_GROUP_EVENTS` events is best; any number is correct).
    pub fn encode_append(&self, groups: &[&[PreparedEvent]], out: &mut Vec<u8>) {
        let mut cmd = Cmd::new();
        cmd.arg("EVALSHA").arg(&self.sha);
        let n_keys: usize = groups.iter().map(|g| g.len()).sum();
        cmd.arg(n_keys);
        for group in groups {
            for e in group.iter() {
                cmd.arg(self.keys.stream(&e.stream));
            }
        }
        append_args(&mut cmd, self.keys.prefix(), self.max_len, groups);
        cmd.write_packed_command(out);
    }

    /// `SCRIPT LOAD` of the append script, appended to `out` (after `NOSCRIPT`).
    pub fn encode_script_load(&self, out: &mut Vec<u8>) {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(self.script)
            .write_packed_command(out);
    }

    /// The outcome of each group from the reply to one `encode_append` call of `groups`
    /// groups. A server error reply (`NOSCRIPT` after a `SCRIPT FLUSH` included) fails every
    /// group with `STORE_UNAVAILABLE`.
    pub fn append_results(&self, reply: WireReply, groups: usize) -> Result<GroupResults> {
        match reply {
            Ok(Value::Array(out)) if out.len() == groups => parse_append_reply(out),
            Err(e) => Err(Error::new(
                ErrorCode::StoreUnavailable,
                format!("Redis refused the append ({e}); nothing was stored"),
            )),
            Ok(other) => Err(unexpected("append", &other)),
        }
    }

    /// `SUBSCRIBE`/`UNSUBSCRIBE` (or the sharded forms) of `channels`, appended to `out`.
    pub fn encode_subscription(command: &str, channels: &[&str], out: &mut Vec<u8>) {
        let mut cmd = redis::cmd(command);
        for c in channels {
            cmd.arg(*c);
        }
        cmd.write_packed_command(out);
    }
}

/// One reply: a value, or the text of an error reply (`ERR …`, `NOSCRIPT …`).
pub type WireReply = std::result::Result<Value, String>;

/// RESP2 replies decoded from the bytes of one connection as they arrive; a reply split
/// across reads waits for its rest.
#[derive(Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded.
    start: usize,
}

impl ReplyReader {
    /// Add bytes read from the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete reply, or `None` until more bytes arrive. A malformed stream fails
    /// with `INTERNAL` (the connection cannot be used any more).
    pub fn next_reply(&mut self) -> Result<Option<WireReply>> {
        match decode(&self.buf[self.start..]) {
            Ok(Some((frame, used))) => {
                self.start += used;
                Ok(Some(match frame {
                    OwnedFrame::Error(e) => Err(e),
                    other => Ok(to_value(other)),
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Error::new(
                ErrorCode::Internal,
                format!("Redis sent bytes that are not RESP2 ({e})"),
            )),
        }
    }
}

fn to_value(frame: OwnedFrame) -> Value {
    match frame {
        OwnedFrame::SimpleString(s) => Value::SimpleString(String::from_utf8_lossy(&s).into()),
        // only at the top of a reply for the commands sent here
        OwnedFrame::Error(e) => Value::SimpleString(e),
        OwnedFrame::Integer(i) => Value::Int(i),
        OwnedFrame::BulkString(b) => Value::BulkString(b),
        OwnedFrame::Array(items) => Value::Array(items.into_iter().map(to_value).collect()),
        OwnedFrame::Null => Value::Nil,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_split_across_reads_wait_for_their_rest() {
        let mut r = ReplyReader::default();
        r.feed(b"*2\r\n:1\r\n$3\r\nab");
        assert_eq!(r.next_reply().unwrap(), None);
        r.feed(b"c\r\n+OK\r\n-ERR no\r\n");
        assert_eq!(
            r.next_reply().unwrap(),
            Some(Ok(Value::Array(vec![
                Value::Int(1),
                Value::BulkString(b"abc".to_vec())
            ])))
        );
        assert_eq!(
            r.next_reply().unwrap(),
            Some(Ok(Value::SimpleString("OK".into())))
        );
        assert_eq!(r.next_reply().unwrap(), Some(Err("ERR no".into())));
        assert_eq!(r.next_reply().unwrap(), None);
    }

    #[test]
    fn bytes_that_are_not_resp_fail() {
        let mut r = ReplyReader::default();
        r.feed(b"?what\r\n");
        assert_eq!(r.next_reply().unwrap_err().code, ErrorCode::Internal);
    }
}
