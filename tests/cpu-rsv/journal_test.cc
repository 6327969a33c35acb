// The reservation journal: a capsule owner that dies without cleaning up
// (SIGKILL) leaves its threads under SCHED_DEADLINE; the next owner adopts
// them from the journal, changes and releases them as its own, and gives
// each thread back the state it had before capsule, not the one it has now.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "capsule/rsv/journal.h"
#include "capsule/rsv/manager.h"
#include "capsule/testkit.h"

using namespace capsule;
using namespace capsule::rsv;
using namespace std::chrono_literals;

namespace {


struct Seen {
  int policy, nice;
  std::vector<int> cpus;
  bool operator==(const Seen&) const = default;
};

Seen look(pid_t tid) {
  auto p = get_sched_params(tid);
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(tid, sizeof set, &set);
  return Seen{p ? p->policy : -1, p ? p->nice : 0, affinity_cpus(set)};
}

VmReservationSpec two_vcpus(pid_t a, pid_t b, std::chrono::microseconds qa = 2000us) {
  return VmReservationSpec{"vm1", 20ms, 0ns, false, {{a, qa, -1, "vcpu0"}, {b, 3ms, -1, "vcpu1"}}};
}

// A capsule owner in a child process that reserves `spec` with a journal
// and then dies by SIGKILL, as a crashed capsuled does: nothing is restored.
void reserve_and_crash(const std::string& journal, const VmReservationSpec& spec) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ReservationManager m;
    m.set_journal(Journal(journal));
    if (!m.reserve(spec)) ::_exit(1);
    ::raise(SIGKILL);
    ::_exit(2);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the owner failed to reserve: " << status;
}

}  // namespace

TEST(Journal, RoundTripsEveryFieldAndRefusesGarbage) {
  testkit::TempDir dir("capsule-journal");
  ASSERT_FALSE(dir.path().empty());
  testkit::BusyThread a("vcpu-a");
  auto snap = ThreadSnapshot::capture(a.tid(), CpusetFs::detect());
  ASSERT_TRUE(snap) << snap.error().message;
  JournalState s;
  s["vm1"] = JournalVm{"vm1", 20ms, 10ms, true, {{ThreadBudget{a.tid(), 2ms, 1, "vcpu0"}, *snap}}};
  Journal j(dir.path() + "/j");
  auto empty = j.load();
  ASSERT_TRUE(empty) << empty.error().message;
  EXPECT_TRUE(empty->empty()) << "no file is an empty journal";
  ASSERT_TRUE(j.store(s).ok());
  auto back = j.load();
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(journal_to_json(*back), journal_to_json(s));
  const JournalThread& t = back->at("vm1").threads.at(0);
  EXPECT_EQ(t.original.start_time, snap->start_time);
  EXPECT_EQ(affinity_cpus(t.original.affinity), affinity_cpus(snap->affinity));
  EXPECT_EQ(back->at("vm1").deadline, 10ms);

  std::ofstream(dir.path() + "/bad") << "{\"capsule_reservation_journal\": 1, \"vms\": [{\"name\": 3}]}";
  auto bad = Journal(dir.path() + "/bad").load();
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find(dir.path() + "/bad"), std::string::npos) << bad.error().message;
  // A VM twice is refused, not silently merged.
  std::string twice = journal_to_json(s);
  const auto vms = twice.find("[") + 1, end = twice.rfind("]");
  const std::string one = twice.substr(vms, end - vms);
  twice.insert(end, "," + one);
  auto dup = journal_from_json(twice);
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().message.find("recorded twice"), std::string::npos) << dup.error().message;
}

TEST(Journal, ANewOwnerAdoptsWhatACrashedOneLeftAndRestoresTheOriginalState) {
  testkit::TempDir dir("capsule-journal");
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/capsuled.journal";
  testkit::BusyThread a("vcpu-a"), b("vcpu-b");
  ASSERT_EQ(setpriority(PRIO_PROCESS, id_t(a.tid()), 5), 0);
  const Seen a0 = look(a.tid()), b0 = look(b.tid());

  ASSERT_NO_FATAL_FAILURE(reserve_and_crash(path, two_vcpus(a.tid(), b.tid())));
  ASSERT_EQ(look(a.tid()).policy, kSchedDeadline) << "a crash leaves the policy in force";

  ReservationManager m;
  m.set_journal(Journal(path));
  auto state = Journal(path).load();
  ASSERT_TRUE(state) << state.error().message;
  auto adopted = m.adopt(*state);
  ASSERT_TRUE(adopted.at("vm1")) << adopted.at("vm1").error().message;
  EXPECT_EQ(adopted.at("vm1")->adopted.size(), 2u);
  ASSERT_NE(m.find("vm1"), nullptr);
  EXPECT_EQ(m.find("vm1")->spec().threads.at(1).runtime, 3ms);
  ASSERT_NE(m.decision("vm1"), nullptr);
  EXPECT_NEAR(m.decision("vm1")->bandwidth, 0.25, 1e-9) << "adopted bandwidth is booked once";

  // The adopted capsule is ours: it changes in place (no "someone else's
  // control" refusal) and releases to the state before the first owner.
  auto changed = m.reserve(two_vcpus(a.tid(), b.tid(), 4000us));
  ASSERT_TRUE(changed) << changed.error().message;
  EXPECT_EQ(get_sched_params(a.tid())->runtime, 4ms);
  ASSERT_TRUE(m.release("vm1").ok());
  EXPECT_EQ(look(a.tid()), a0) << "nice 5 and the affinity come back, not SCHED_OTHER nice 0";
  EXPECT_EQ(look(b.tid()), b0);
  auto after = Journal(path).load();
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->empty()) << "a released VM leaves the journal";
}

TEST(Journal, AThreadChangedByHandWhileNoOwnerRanIsNotTakenBack) {
  testkit::TempDir dir("capsule-journal");
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/capsuled.journal";
  testkit::BusyThread a("vcpu-a"), b("vcpu-b");
  const Seen b0 = look(b.tid());
  ASSERT_NO_FATAL_FAILURE(reserve_and_crash(path, two_vcpus(a.tid(), b.tid())));
  // An operator puts vcpu0 back to SCHED_OTHER nice 3 by hand.
  SchedParams other;
  other.nice = 3;
  ASSERT_TRUE(set_sched_params(a.tid(), other).ok());
  const Seen by_hand = look(a.tid());

  ReservationManager m;
  auto adopted = m.adopt(*Journal(path).load());
  ASSERT_TRUE(adopted.at("vm1")) << adopted.at("vm1").error().message;
  EXPECT_EQ(adopted.at("vm1")->adopted.size(), 1u);
  ASSERT_EQ(adopted.at("vm1")->not_ours.size(), 1u);
  EXPECT_NE(adopted.at("vm1")->not_ours[0].find(std::to_string(a.tid())), std::string::npos);
  m.release_all();
  EXPECT_EQ(look(a.tid()), by_hand) << "what the operator set stays";
  EXPECT_EQ(look(b.tid()), b0);
}

TEST(Journal, ACrashAfterTheRecordButBeforeTheKernelChangeLeavesNothingToAdopt) {
  testkit::TempDir dir("capsule-journal");
  ASSERT_FALSE(dir.path().empty());
  testkit::BusyThread a("vcpu-a");
  const Seen a0 = look(a.tid());
  // What the write-ahead record holds when the owner dies before sched_setattr.
  auto snap = ThreadSnapshot::capture(a.tid(), CpusetFs::detect());
  ASSERT_TRUE(snap);
  JournalState s;
  s["vm1"] = JournalVm{"vm1", 20ms, 0ns, false, {{ThreadBudget{a.tid(), 2ms, -1, "vcpu0"}, *snap}}};
  ReservationManager m;
  auto adopted = m.adopt(s);
  ASSERT_FALSE(adopted.at("vm1"));
  EXPECT_EQ(adopted.at("vm1").error().errnum, ENOENT) << adopted.at("vm1").error().message;
  EXPECT_EQ(m.find("vm1"), nullptr);
  EXPECT_EQ(look(a.tid()), a0);
}

TEST(Journal, TheRecordIsWrittenBeforeTheKernelIsChanged) {
  testkit::TempDir dir("capsule-journal");
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/capsuled.journal";
  testkit::BusyThread a("vcpu-a"), b("vcpu-b");
  // A journal that cannot be written stops the change before it starts.
  ReservationManager m;
  m.set_journal(Journal(dir.path() + "/no-such-dir/capsuled.journal"));
  auto r = m.reserve(two_vcpus(a.tid(), b.tid()));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("cannot record the change first"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("nothing was changed"), std::string::npos) << r.error().message;
  EXPECT_NE(look(a.tid()).policy, kSchedDeadline);
  EXPECT_EQ(m.find("vm1"), nullptr);
}

TEST(Journal, DriftFromOutsideIsFoundAndRepaired) {
  testkit::BusyThread a("vcpu-a"), b("vcpu-b");
  const Seen a0 = look(a.tid());
  ReservationManager m;
  ASSERT_TRUE(m.reserve(two_vcpus(a.tid(), b.tid())));
  EXPECT_TRUE(m.drift().empty());
  SchedParams other;
  ASSERT_TRUE(set_sched_params(a.tid(), other).ok());  // an operator's chrt -o
  auto found = m.drift();
  ASSERT_EQ(found.count("vm1"), 1u);
  ASSERT_EQ(found["vm1"].size(), 1u);
  EXPECT_NE(found["vm1"][0].find("not SCHED_DEADLINE"), std::string::npos) << found["vm1"][0];
  ASSERT_TRUE(m.repair("vm1").ok());
  EXPECT_EQ(look(a.tid()).policy, kSchedDeadline);
  EXPECT_EQ(get_sched_params(a.tid())->runtime, 2ms);
  EXPECT_TRUE(m.drift().empty());
  m.release_all();
  EXPECT_EQ(look(a.tid()), a0);
}

// A pass over many new VMs (capsuled's reconcile) records them ahead in one
// write; a thread two VMs name is recorded for neither (only one may get
// it), and what the journal holds at the end is what is in force.
TEST(Journal, ABatchRecordsNewVmsAheadOnceButNoContestedThread) {
  testkit::TempDir dir("capsule-journal");
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/capsuled.journal";
  testkit::BusyThread a("vcpu-a"), b("vcpu-b"), c("vcpu-c");
  auto spec = [](const std::string& name, pid_t tid) {
    return VmReservationSpec{name, 20ms, 0ns, false, {{tid, 1ms, -1, "vcpu0"}}};
  };
  ReservationManager m;
  m.set_journal(Journal(path));
  // x and y both name thread b (two rows naming one process).
  m.begin_batch({spec("w", a.tid()), spec("x", b.tid()), spec("y", b.tid()), spec("z", c.tid())});
  auto ahead = Journal(path).load();
  ASSERT_TRUE(ahead) << ahead.error().message;
  EXPECT_EQ(ahead->count("w"), 1u);
  EXPECT_EQ(ahead->count("z"), 1u);
  EXPECT_EQ(ahead->count("x") + ahead->count("y"), 0u) << "a contested thread was recorded ahead";

  ASSERT_TRUE(m.reserve(spec("w", a.tid())));
  ASSERT_TRUE(m.reserve(spec("x", b.tid())));  // written ahead by itself, as outside a batch
  m.end_batch();                               // z was refused (not reserved): gone from the record
  auto after = Journal(path).load();
  ASSERT_TRUE(after) << after.error().message;
  EXPECT_EQ(after->size(), 2u);
  EXPECT_EQ(after->count("w") + after->count("x"), 2u);
  m.release_all();
}
