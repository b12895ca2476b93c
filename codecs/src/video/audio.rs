//! The audio side of a transcode: the input's best audio stream is copied when the output
//! container's codec already matches (AAC into MP4, Opus into WebM), and otherwise decoded,
//! converted by a libavfilter graph (sample format, rate, layout; at most stereo) into frames
//! of the encoder's size, and encoded (FFmpeg's AAC encoder, or libopus). An audio stream that
//! cannot be decoded is left out with the reason; a corrupt audio packet is skipped — the video
//! is what the job is for.

use ffmpeg_next as ff;

use super::{Container, corrupt, internal};
use crate::error::MediaError;

/// What happens to the input's audio.
pub(crate) enum Audio {
    /// No audio stream, or left out: nothing to do.
    Nothing,
    /// Packets copied to output stream `out`.
    Copy {
        input: usize,
        in_tb: ff::Rational,
        out: usize,
    },
    /// Decoded and re-encoded.
    Encode(Box<Encode>),
}

pub(crate) struct Encode {
    input: usize,
    decoder: ff::decoder::Audio,
    encoder: ff::encoder::Audio,
    graph: ff::filter::Graph,
    out: usize,
    out_rate: i32,
    /// Samples fed into the graph, in the input's rate (the graph's input timestamps).
    fed: i64,
    /// Samples handed to the encoder, in the output's rate.
    encoded: i64,
    in_fmt: (ff::format::Sample, u32, u16),
}

impl Audio {
    /// Plans the audio of `ictx` into `octx` (before its header is written). Returns the plan
    /// and what the report says about it.
    pub fn plan(
        ictx: &ff::format::context::Input,
        octx: &mut ff::format::context::Output,
        container: Container,
    ) -> Result<(Self, String), MediaError> {
        let Some(ist) = ictx.streams().best(ff::media::Type::Audio) else {
            return Ok((Audio::Nothing, "none".into()));
        };
        let par = ist.parameters();
        let codec = par.id();
        if codec == container.audio_codec() {
            let mut a = octx
                .add_stream(ff::encoder::find(ff::codec::Id::None))
                .map_err(|e| internal("adding the audio stream", e))?;
            a.set_parameters(par);
            return Ok((
                Audio::Copy {
                    input: ist.index(),
                    in_tb: ist.time_base(),
                    out: a.index(),
                },
                format!("copied ({})", codec.name()),
            ));
        }
        match Encode::new(&ist, octx, container) {
            Ok(e) => {
                let note = format!("encoded {} -> {}", codec.name(), container.audio_codec().name());
                Ok((Audio::Encode(Box::new(e)), note))
            }
            Err(Plan::LeftOut(why)) => Ok((Audio::Nothing, format!("left out ({}): {why}", codec.name()))),
            Err(Plan::Failed(e)) => Err(e),
        }
    }

    /// Handles one packet of the input's stream `stream`.
    pub fn packet(
        &mut self,
        stream: &ff::Stream<'_>,
        mut packet: ff::Packet,
        octx: &mut ff::format::context::Output,
    ) -> Result<(), MediaError> {
        match self {
            Audio::Nothing => Ok(()),
            Audio::Copy { input, in_tb, out } => {
                if stream.index() != *input {
                    return Ok(());
                }
                let out_tb = octx.stream(*out).map(|s| s.time_base()).unwrap_or(*in_tb);
                packet.rescale_ts(*in_tb, out_tb);
                packet.set_position(-1);
                packet.set_stream(*out);
                packet.write_interleaved(octx).map_err(|e| corrupt("copying audio", e))
            }
            Audio::Encode(e) => {
                if stream.index() != e.input {
                    return Ok(());
                }
                // A packet the decoder refuses is skipped.
                if e.decoder.send_packet(&packet).is_ok() {
                    e.drain_decoder(octx)?;
                }
                Ok(())
            }
        }
    }

    /// Flushes the decoder, the graph and the encoder (after the last packet).
    pub fn finish(&mut self, octx: &mut ff::format::context::Output) -> Result<(), MediaError> {
        let Audio::Encode(e) = self else { return Ok(()) };
        let _ = e.decoder.send_eof();
        e.drain_decoder(octx)?;
        if let Some(mut src) = e.graph.get("in") {
            let _ = src.source().flush();
        }
        e.drain_graph(octx)?;
        e.encoder
            .send_eof()
            .map_err(|err| internal("flushing the audio encoder", err))?;
        e.write_packets(octx)
    }
}

/// Why an audio stream is not encoded.
enum Plan {
    /// The input's fault: the audio is left out, the video goes on.
    LeftOut(String),
    /// Ours.
    Failed(MediaError),
}

impl Encode {
    fn new(ist: &ff::Stream<'_>, octx: &mut ff::format::context::Output, container: Container) -> Result<Self, Plan> {
        let left = |s: String| Plan::LeftOut(s);
        let mut dec = ff::codec::context::Context::from_parameters(ist.parameters())
            .map_err(|e| left(format!("unreadable parameters: {e}")))?
            .decoder();
        dec.set_packet_time_base(ist.time_base());
        let decoder = dec.audio().map_err(|e| left(format!("no decoder: {e}")))?;
        let (rate, channels, fmt) = (decoder.rate(), decoder.channels(), decoder.format());
        if rate == 0 || channels == 0 || fmt == ff::format::Sample::None {
            return Err(left("the stream does not say its rate, channels or format".into()));
        }
        let in_layout = if decoder.channel_layout().is_empty() {
            ff::ChannelLayout::default(i32::from(channels))
        } else {
            decoder.channel_layout()
        };
        let name = container.audio_encoder();
        let codec = ff::encoder::find_by_name(name)
            .ok_or_else(|| Plan::Failed(MediaError::Internal(format!("{name} is not available"))))?;
        let acodec = codec
            .audio()
            .map_err(|e| Plan::Failed(internal("the audio encoder", e)))?;
        let rates: Vec<i32> = acodec.rates().map(|r| r.collect()).unwrap_or_default();
        let out_rate = match i32::try_from(rate) {
            Ok(r) if rates.is_empty() || rates.contains(&r) => r,
            _ if rates.contains(&48_000) => 48_000,
            _ => rates.first().copied().unwrap_or(48_000),
        };
        let out_channels = in_layout.channels().clamp(1, 2);
        let layout = acodec
            .channel_layouts()
            .map(|l| l.best(out_channels))
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| ff::ChannelLayout::default(out_channels));
        let out_fmt = acodec
            .formats()
            .and_then(|mut f| f.next())
            .unwrap_or(ff::format::Sample::F32(ff::format::sample::Type::Planar));
        let global = octx.format().flags().contains(ff::format::Flags::GLOBAL_HEADER);
        let mut enc = ff::codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(|e| Plan::Failed(internal("the audio encoder", e)))?;
        enc.set_rate(out_rate);
        enc.set_channel_layout(layout);
        enc.set_channels(layout.channels());
        enc.set_format(out_fmt);
        enc.set_bit_rate(if container == Container::WebM { 96_000 } else { 128_000 });
        enc.set_time_base(ff::Rational::new(1, out_rate));
        if global {
            enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        }
        let encoder = enc
            .open_as(codec)
            .map_err(|e| Plan::Failed(internal("opening the audio encoder", e)))?;
        let mut ost = octx
            .add_stream(codec)
            .map_err(|e| Plan::Failed(internal("adding the audio stream", e)))?;
        ost.set_parameters(&encoder);
        ost.set_time_base(ff::Rational::new(1, out_rate));
        let out = ost.index();
        let graph = graph(rate, fmt, in_layout, &encoder).map_err(|e| left(format!("no conversion: {e}")))?;
        Ok(Self {
            input: ist.index(),
            decoder,
            encoder,
            graph,
            out,
            out_rate,
            fed: 0,
            encoded: 0,
            in_fmt: (fmt, rate, channels),
        })
    }

    fn drain_decoder(&mut self, octx: &mut ff::format::context::Output) -> Result<(), MediaError> {
        let mut frame = ff::frame::Audio::empty();
        while self.decoder.receive_frame(&mut frame).is_ok() {
            // A frame unlike the stream's header (a corrupt packet) would break the graph.
            if (frame.format(), frame.rate(), frame.channels()) != self.in_fmt || frame.samples() == 0 {
                continue;
            }
            frame.set_pts(Some(self.fed));
            self.fed += frame.samples() as i64;
            if let Some(mut src) = self.graph.get("in")
                && src.source().add(&frame).is_err()
            {
                continue;
            }
            self.drain_graph(octx)?;
        }
        Ok(())
    }

    fn drain_graph(&mut self, octx: &mut ff::format::context::Output) -> Result<(), MediaError> {
        let mut filtered = ff::frame::Audio::empty();
        loop {
            let Some(mut sink) = self.graph.get("out") else {
                return Ok(());
            };
            if sink.sink().frame(&mut filtered).is_err() {
                return Ok(());
            }
            filtered.set_pts(Some(self.encoded));
            self.encoded += filtered.samples() as i64;
            self.encoder
                .send_frame(&filtered)
                .map_err(|e| internal("encoding audio", e))?;
            self.write_packets(octx)?;
        }
    }

    fn write_packets(&mut self, octx: &mut ff::format::context::Output) -> Result<(), MediaError> {
        let enc_tb = ff::Rational::new(1, self.out_rate);
        let out_tb = octx.stream(self.out).map(|s| s.time_base()).unwrap_or(enc_tb);
        let mut packet = ff::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(self.out);
            packet.rescale_ts(enc_tb, out_tb);
            packet
                .write_interleaved(octx)
                .map_err(|e| internal("writing audio", e))?;
        }
        Ok(())
    }
}

/// `abuffer` (the decoder's format) → `anull` → `abuffersink` (the encoder's format, rate and
/// layout, in frames of the encoder's size); libavfilter inserts the conversions.
fn graph(
    rate: u32,
    fmt: ff::format::Sample,
    layout: ff::ChannelLayout,
    encoder: &ff::encoder::Audio,
) -> Result<ff::filter::Graph, ff::Error> {
    let mut g = ff::filter::Graph::new();
    let args = format!(
        "time_base=1/{rate}:sample_rate={rate}:sample_fmt={}:channel_layout=0x{:x}",
        fmt.name(),
        layout.bits()
    );
    let abuffer = ff::filter::find("abuffer").ok_or(ff::Error::FilterNotFound)?;
    let sink = ff::filter::find("abuffersink").ok_or(ff::Error::FilterNotFound)?;
    g.add(&abuffer, "in", &args)?;
    g.add(&sink, "out", "")?;
    if let Some(mut out) = g.get("out") {
        out.set_sample_format(encoder.format());
        out.set_channel_layout(encoder.channel_layout());
        out.set_sample_rate(encoder.rate());
    }
    g.output("in", 0)?.input("out", 0)?.parse("anull")?;
    g.validate()?;
    let variable = encoder
        .codec()
        .is_some_and(|c| c.capabilities().contains(ff::codec::Capabilities::VARIABLE_FRAME_SIZE));
    if !variable && let Some(mut out) = g.get("out") {
        out.sink().set_frame_size(encoder.frame_size());
    }
    Ok(g)
}
