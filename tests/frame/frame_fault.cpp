// A program in the examples' frame whose ranks fail in the ways the frame must survive:
//   frame_fault lonely    the last rank throws while the others wait for it in a collective:
//                         it must abort the job (status 2) instead of leaving it hanging
//   frame_fault late      the last rank throws after the others have finished: they report
//                         its error too, and every rank ends with status 2
//   frame_fault stall S   the last rank stops making progress; the watchdog (S seconds) ends
//                         the job with status 2
//   frame_fault ok        every rank succeeds (status 0)
#include "example_main.hpp"

#include <chrono>
#include <string>
#include <thread>

int main(int argc, char* argv[]) {
  return dchag_example::example_main(argc, argv, [&](const dchag::Communicator& world) {
    const std::string mode = argc > 1 ? argv[1] : "ok";
    const bool last = world.rank() == world.size() - 1;
    if (mode == "lonely") {
      if (last) throw dchag::Error("frame_fault: this rank failed alone");
      world.barrier();  // never completes: the last rank does not come
    } else if (mode == "late") {
      if (last) throw dchag::Error("frame_fault: this rank failed at the end");
    } else if (mode == "stall") {
      dchag_example::watchdog().arm(std::stod(argv[2]), world.rank());
      if (last) std::this_thread::sleep_for(std::chrono::hours(1));
      world.barrier();
    }
    return 0;
  });
}
