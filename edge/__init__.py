"""The lane daemon: reads the lane's instruments, judges every spectrum and frame, and cuts samples."""
