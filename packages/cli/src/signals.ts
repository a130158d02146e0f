/**
 * Ctrl-C handling: the first SIGINT asks the running command to stop cleanly (generation ends with what it has);
 * a second one exits at once.
 */
import { EXIT_INTERRUPTED } from './errors.js';

export function onInterrupt(stop: () => void): () => void {
  let count = 0;
  const handler = (): void => {
    count++;
    if (count === 1) stop();
    else process.exit(EXIT_INTERRUPTED);
  };
  process.on('SIGINT', handler);
  return () => process.off('SIGINT', handler);
}
