//! Gantry codecs: local media work — transcoding (ffmpeg-next), upscaling (image, fast_image_resize), PDQ/vPDQ perceptual hashing.
