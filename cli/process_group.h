// The processes of one `q3n batch` job: one when run plainly, N under an MPI launcher (mpirun,
// srun), each with its rank. MPI is optional at build time (Q3N_HAVE_MPI, found by CMake) and
// only initialised when a launcher started the process.
#pragma once

#include <cstdint>

namespace q3n::cli {

class ProcessGroup {
 public:
  ProcessGroup();  // throws an Error when a launcher asks for N > 1 and this build has no MPI
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }  // among the ranks on this host
  void barrier() const;
  int max_over_ranks(int value) const;
  [[noreturn]] void abort(int status) const;  // ends every rank (MPI_Abort); one process: exit

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  bool initialised_ = false;
};

}  // namespace q3n::cli
