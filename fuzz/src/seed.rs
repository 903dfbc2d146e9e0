//! Makes fuzzing seeds from a packed bootstrap, through the format's own reader, so
//! that no layout arithmetic lives here: `cargo run --bin seed -- OUT/bootstrap`.
//! Writes `corpus/manifest/{launch,manifest,task-index}` and `corpus/payload/seed`.

use std::fs;
use std::io::Read;
use std::path::Path;

use coldpack_bootstrap::payload::Payload;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os()
        .nth(1)
        .ok_or("usage: seed PACKED-BOOTSTRAP")?;
    let payload = Payload::open(Path::new(&path))?;
    let launch = payload.launch()?.encode();
    let manifest = payload.manifest()?;
    let raw = payload.raw_manifest()?;
    let task = payload.task_index(&manifest)?.encode();
    fs::create_dir_all("corpus/manifest")?;
    fs::create_dir_all("corpus/payload")?;
    fs::write("corpus/manifest/launch", &launch)?;
    fs::write("corpus/manifest/manifest", &raw)?;
    fs::write("corpus/manifest/task-index", &task)?;
    let mut input = vec![0u8];
    input.extend_from_slice(&(launch.len() as u16).to_le_bytes());
    input.extend_from_slice(&launch);
    input.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    input.extend_from_slice(&raw);
    for (chunk, start) in manifest.chunks.iter().zip(manifest.chunk_starts()) {
        let mut frame = Vec::new();
        payload
            .chunk_reader(start, chunk.compressed_len)
            .read_to_end(&mut frame)?;
        input.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        input.extend_from_slice(&frame);
    }
    fs::write("corpus/payload/seed", &input)?;
    println!(
        "seeds written from {} ({} chunks)",
        payload.path().display(),
        manifest.chunks.len()
    );
    Ok(())
}
