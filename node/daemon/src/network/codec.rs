//! Length-prefixed protobuf over libp2p request-response streams: every
//! message is bounded in size before it is read, and in element counts
//! before it is decoded ([`WireChecked`]).

use super::*;

/// Length-prefixed protobuf: a 4-byte big-endian length, then the message.
/// Requests and responses have separate size limits.
pub(crate) struct ProstCodec<Req, Resp> {
    pub(crate) max_request: usize,
    pub(crate) max_response: usize,
    pub(crate) limits: WireLimits,
    pub(crate) _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> ProstCodec<Req, Resp> {
    pub(crate) fn new(max_request: usize, max_response: usize, limits: WireLimits) -> Self {
        ProstCodec {
            max_request,
            max_response,
            limits,
            _types: PhantomData,
        }
    }
}

// Manual impl: a derive would needlessly require `Req: Clone, Resp: Clone`.
impl<Req, Resp> Clone for ProstCodec<Req, Resp> {
    fn clone(&self) -> Self {
        ProstCodec::new(self.max_request, self.max_response, self.limits)
    }
}

/// An inbound request as read off the wire. Invalid input is a value, not
/// an error, because libp2p only logs `read_request` errors: as a value it
/// reaches the swarm task with the sender's peer id, which then disconnects
/// that peer.
#[derive(Debug)]
pub(crate) enum Checked<T> {
    /// Decoded within the size limit.
    Valid(T),
    /// Oversize or undecodable; why.
    Invalid(String),
}

impl<Req, Resp> request_response::Codec for ProstCodec<Req, Resp>
where
    Req: WireChecked + Send + 'static,
    Resp: WireChecked + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Checked<Req>;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Checked<Req>>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_message(io, self.max_request, &self.limits).await {
            Ok(req) => Ok(Checked::Valid(req)),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Checked::Invalid(e.to_string())),
            Err(e) => Err(e),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, self.max_response, &self.limits).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Checked<Req>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            Checked::Valid(req) => write_message(io, &req, self.max_request).await,
            Checked::Invalid(why) => Err(io::Error::new(io::ErrorKind::InvalidInput, why)),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &res, self.max_response).await
    }
}

/// Reads one length-prefixed message of at most `limit` bytes whose element
/// counts are within `limits`. Oversize, overcount or undecodable input is
/// `InvalidData` (the peer's fault: disconnect it); an oversize message is
/// refused before its body is read, an overcount one before it is decoded.
pub(crate) async fn read_message<M, R>(
    io: &mut R,
    limit: usize,
    limits: &WireLimits,
) -> io::Result<M>
where
    M: WireChecked,
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = u64::from(u32::from_be_bytes(prefix));
    if len > limit as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds the {limit}-byte limit"),
        ));
    }
    // Grow the buffer as bytes arrive rather than trusting the prefix.
    let mut buf = Vec::new();
    (&mut *io).take(len).read_to_end(&mut buf).await?;
    if buf.len() as u64 != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("stream ended after {} of {len} announced bytes", buf.len()),
        ));
    }
    M::check(&buf, limits)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    M::decode(buf.as_slice()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("undecodable protobuf: {e}"),
        )
    })
}

/// Writes one length-prefixed message. A message over `limit` is refused
/// with `InvalidInput` (our fault: the peer would reject it).
pub(crate) async fn write_message<M, W>(io: &mut W, msg: &M, limit: usize) -> io::Result<()>
where
    M: prost::Message,
    W: AsyncWrite + Unpin,
{
    let len = msg.encoded_len();
    let prefix = match u32::try_from(len) {
        Ok(l) if len <= limit => l.to_be_bytes(),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("message of {len} bytes exceeds the {limit}-byte limit; not sent"),
            ))
        }
    };
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&prefix);
    msg.encode(&mut buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    io.write_all(&buf).await?;
    io.flush().await
}

/// Codec of `/fedpeg/gossip/2`: a batch of gossip, acknowledged empty.
pub(crate) type GossipCodec = ProstCodec<pb::GossipBatch, ()>;
/// Codec of `/fedpeg/sync/2`: a block range request and its blocks.
pub(crate) type SyncCodec = ProstCodec<pb::SyncRequest, pb::SyncResponse>;
