//! A chunk: one zstd frame of a stretch of the data stream, the files' contents end to
//! end with nothing between them. The manifest says which files, so the frame needs
//! no headers of its own, and its bytes are decoded straight into the buffer that is
//! written to the files.
//!
//! [`encode`] is how the packer (and every test that builds a payload) makes one;
//! [`read_pieces`] is how extraction and `coldpack verify` read one back, through the
//! hash and a decoder whose window is capped, handing each piece of a file to a
//! [`Sink`] that decides what to do with its bytes.

use std::io::{self, Read};

use zstd::zstd_safe::{CParameter, DCtx, DParameter, InBuffer, OutBuffer, ResetDirective};

use crate::error::{Error, Result};
use crate::manifest::{Manifest, Piece};
use crate::payload::Payload;

/// Largest zstd window a chunk may ask for (8 MiB). Each decoding thread holds one
/// window, so this, times the threads, bounds the bootstrap's memory; a frame that
/// asks for more is refused instead of being allowed to allocate it.
pub const WINDOW_LOG_MAX: u32 = 23;
const INPUT_BUFFER: usize = 128 * 1024;
const OUTPUT_BUFFER: usize = 512 * 1024;
/// What one decoding thread holds at most: its window, its buffers, zstd's own.
pub const THREAD_MEMORY: usize = (1 << WINDOW_LOG_MAX) + INPUT_BUFFER + OUTPUT_BUFFER + (512 << 10);

/// Compresses one chunk's stretch of the data stream at `level`.
pub fn encode(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    // Levels 20-22 ask for windows past 8 MiB, which the bootstrap refuses.
    compressor.set_parameter(CParameter::WindowLog(WINDOW_LOG_MAX))?;
    compressor.compress(data)
}

/// What is done with the bytes of each piece, in order: `begin`, any number of
/// `write`s, `end`.
pub trait Sink {
    fn begin(&mut self, piece: &Piece) -> Result<()>;
    fn write(&mut self, piece: &Piece, bytes: &[u8]) -> Result<()>;
    fn end(&mut self, piece: &Piece) -> Result<()>;
}

/// A decoding thread's context and buffers, reused from chunk to chunk.
pub struct Decoder {
    context: DCtx<'static>,
    input: Vec<u8>,
    output: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Result<Decoder> {
        let mut context = DCtx::create();
        context
            .set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))
            .map_err(|code| Error::corrupt(zstd::zstd_safe::get_error_name(code)))?;
        Ok(Decoder {
            context,
            input: vec![0; INPUT_BUFFER],
            output: vec![0; OUTPUT_BUFFER],
        })
    }
}

/// Why a chunk failed: its bytes (the payload's fault) or what was done with them.
enum Failure {
    Read(io::Error),
    Sink(Error),
}

fn invalid(what: &str) -> Failure {
    Failure::Read(io::Error::new(io::ErrorKind::InvalidData, what.to_owned()))
}

/// Streams chunk `index` and hands its pieces to `sink`.
pub fn read_pieces(
    payload: &Payload,
    manifest: &Manifest,
    index: usize,
    start: u64,
    pieces: &[Piece],
    decoder: &mut Decoder,
    sink: &mut impl Sink,
) -> Result<()> {
    let chunk = &manifest.chunks[index];
    let mut reader = payload.chunk_reader(start, chunk.compressed_len);
    let outcome = decode(&mut reader, chunk.data_len, pieces, decoder, sink);
    // The hash verdict comes first: a damaged chunk usually also fails to decode, and
    // "does not match its SHA-256" is the truer reason.
    let hashed = reader.finish(&chunk.sha256);
    let damaged = |e: io::Error| {
        Error::corrupt(format!(
            "chunk {index} of the payload is damaged ({e}): deploy the file again"
        ))
    };
    match (outcome, hashed) {
        (Err(Failure::Sink(e)), _) => Err(e),
        (_, Err(e)) | (Err(Failure::Read(e)), Ok(())) => Err(damaged(e)),
        (Ok(()), Ok(())) => Ok(()),
    }
}

fn decode(
    reader: &mut crate::payload::ChunkReader,
    data_len: u64,
    pieces: &[Piece],
    decoder: &mut Decoder,
    sink: &mut impl Sink,
) -> std::result::Result<(), Failure> {
    let Decoder {
        context,
        input,
        output,
    } = decoder;
    context
        .reset(ResetDirective::SessionOnly)
        .map_err(|_| invalid("cannot reset the decoder"))?;
    let mut place = Placer::new(pieces, sink)?;
    let (mut pos, mut filled) = (0, 0);
    let mut decoded: u64 = 0;
    loop {
        if pos == filled {
            filled = reader.read(input).map_err(Failure::Read)?;
            pos = 0;
            if filled == 0 {
                return Err(invalid("it ends inside its frame"));
            }
        }
        let mut source = InBuffer {
            src: &input[..filled],
            pos,
        };
        let mut target = OutBuffer::around(&mut output[..]);
        let hint = context
            .decompress_stream(&mut target, &mut source)
            .map_err(|code| invalid(zstd::zstd_safe::get_error_name(code)))?;
        pos = source.pos;
        let produced = target.pos();
        decoded += produced as u64;
        if decoded > data_len {
            return Err(invalid("it holds more than the manifest says"));
        }
        place.bytes(&output[..produced])?;
        if hint == 0 {
            break;
        }
    }
    if decoded != data_len {
        return Err(invalid("it holds less than the manifest says"));
    }
    if pos != filled || reader.left() != 0 {
        return Err(invalid("it has bytes after its frame"));
    }
    Ok(())
}

/// Hands decoded bytes to the pieces they belong to, in order.
struct Placer<'a, S> {
    pieces: &'a [Piece],
    sink: &'a mut S,
    current: usize,
    done: u64,
}

impl<'a, S: Sink> Placer<'a, S> {
    fn new(pieces: &'a [Piece], sink: &'a mut S) -> std::result::Result<Self, Failure> {
        if let Some(first) = pieces.first() {
            sink.begin(first).map_err(Failure::Sink)?;
        }
        Ok(Placer {
            pieces,
            sink,
            current: 0,
            done: 0,
        })
    }

    fn bytes(&mut self, mut bytes: &[u8]) -> std::result::Result<(), Failure> {
        while !bytes.is_empty() {
            let piece = &self.pieces[self.current];
            let take = bytes.len().min((piece.len - self.done) as usize);
            self.sink
                .write(piece, &bytes[..take])
                .map_err(Failure::Sink)?;
            self.done += take as u64;
            bytes = &bytes[take..];
            if self.done == piece.len {
                self.sink.end(piece).map_err(Failure::Sink)?;
                self.current += 1;
                self.done = 0;
                if let Some(next) = self.pieces.get(self.current) {
                    self.sink.begin(next).map_err(Failure::Sink)?;
                }
            }
        }
        Ok(())
    }
}
