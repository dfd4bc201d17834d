package mc;

/** mc_log_fn: receives every log line at or below the level (McConstants.MC_LOG_*), from any mc
 *  thread. An exception it throws is dropped. */
@FunctionalInterface
public interface LogHandler {
  void log(int level, String message);
}
