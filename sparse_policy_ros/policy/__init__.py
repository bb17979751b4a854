"""Dense visuomotor diffusion policy: config, encoders, transformer, scheduler, I/O."""
