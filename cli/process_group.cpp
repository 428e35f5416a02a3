#include "cli/process_group.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "runtime/error.h"

#ifdef Q3N_HAVE_MPI
#include <mpi.h>
#endif

namespace q3n::cli {
namespace {

// Whether an MPI launcher started this process (mpirun/mpiexec of Open MPI or MPICH, srun
// --mpi=pmix), and the world size it announced where it says (0: ask MPI).
bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK"})
    if (std::getenv(name)) return true;
  return false;
}
int announced_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* v = std::getenv(name)) return std::max(1, std::atoi(v));
  return 0;
}

}  // namespace

ProcessGroup::ProcessGroup() {
  if (!launched_by_mpi() || announced_size() == 1) return;
#ifdef Q3N_HAVE_MPI
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  initialised_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &local_rank_);
  MPI_Comm_free(&local);
#else
  throw Error(
      "started by an MPI launcher, but this q3n was built without MPI: install Open MPI (scripts/setup.sh "
      "does) and rebuild, or run one process");
#endif
}

ProcessGroup::~ProcessGroup() {
#ifdef Q3N_HAVE_MPI
  if (initialised_) MPI_Finalize();
#endif
}

void ProcessGroup::barrier() const {
#ifdef Q3N_HAVE_MPI
  if (initialised_) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

int ProcessGroup::max_over_ranks(int value) const {
#ifdef Q3N_HAVE_MPI
  if (initialised_) {
    int out = value;
    MPI_Allreduce(&value, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return out;
  }
#endif
  return value;
}

void ProcessGroup::abort(int status) const {
#ifdef Q3N_HAVE_MPI
  if (initialised_) MPI_Abort(MPI_COMM_WORLD, status);
#endif
  std::exit(status);
}

}  // namespace q3n::cli
