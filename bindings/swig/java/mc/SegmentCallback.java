package mc;

/**
 * mc_segment_fn: called on an engine thread (attached to the JVM as a daemon) on every change of
 * an open segment's state (McConstants.MC_SEGMENT_OK / MC_SEGMENT_UNREACHABLE) or its peer's
 * incarnation. Keep it short; an exception it throws is dropped. It must not close the engine.
 */
@FunctionalInterface
public interface SegmentCallback {
  void onSegment(long segment, int state, long incarnation);
}
