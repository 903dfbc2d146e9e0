//! Makes fuzzing seeds from a packed bootstrap, through the format's own reader, so
//! that no layout arithmetic lives here: `cargo run --bin seed -- OUT/bootstrap [NAME]`.
//! Writes `corpus/manifest/NAME-{launch,manifest,task-index}` and
//! `corpus/payload/NAME` (NAME defaults to `seed`), so the seeds of several packs can
//! sit side by side.

use std::fs;
use std::io::Read;
use std::path::Path;

use coldpack_bootstrap::payload::Payload;

/// Bit 0 of the payload target's first byte: the header's direct flag (see
/// fuzz_targets/payload.rs). A seed must carry it, or the target's payload fails the
/// header-and-manifest agreement check before reaching anything else.
const INPUT_DIRECT: u8 = 1;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let path = args.next().ok_or("usage: seed PACKED-BOOTSTRAP [NAME]")?;
    let name = args.next().unwrap_or_else(|| "seed".into());
    let name = name.to_str().ok_or("NAME must be UTF-8")?;
    let payload = Payload::open(Path::new(&path))?;
    let launch = payload.launch()?.encode();
    let manifest = payload.manifest()?;
    let raw = payload.raw_manifest()?;
    let task = payload.task_index(&manifest)?.encode();
    fs::create_dir_all("corpus/manifest")?;
    fs::create_dir_all("corpus/payload")?;
    fs::write(format!("corpus/manifest/{name}-launch"), &launch)?;
    fs::write(format!("corpus/manifest/{name}-manifest"), &raw)?;
    fs::write(format!("corpus/manifest/{name}-task-index"), &task)?;
    let mut input = vec![if payload.is_direct() { INPUT_DIRECT } else { 0 }];
    input.extend_from_slice(&u16::try_from(launch.len())?.to_le_bytes());
    input.extend_from_slice(&launch);
    input.extend_from_slice(&u32::try_from(raw.len())?.to_le_bytes());
    input.extend_from_slice(&raw);
    for (chunk, start) in manifest.chunks.iter().zip(manifest.chunk_starts()) {
        let mut frame = Vec::new();
        payload
            .chunk_reader(start, chunk.compressed_len)
            .read_to_end(&mut frame)?;
        input.extend_from_slice(&u32::try_from(frame.len())?.to_le_bytes());
        input.extend_from_slice(&frame);
    }
    fs::write(format!("corpus/payload/{name}"), &input)?;
    println!(
        "{name}: {} entries, {} chunks, {} bytes of data, {} (from {})",
        manifest.len(),
        manifest.chunks.len(),
        manifest.chunks.iter().map(|c| c.data_len).sum::<u64>(),
        if payload.is_direct() {
            "direct"
        } else {
            "extracted"
        },
        payload.path().display()
    );
    Ok(())
}
