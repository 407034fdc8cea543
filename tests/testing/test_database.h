// A fresh PostgreSQL database per test, on the cluster named by $REPTRACE_TEST_PG
// (an admin conninfo; tests/run_all.sh starts a private cluster and sets it).
// Without $REPTRACE_TEST_PG a test using this fails with a message saying so: tests
// that need PostgreSQL never pass by skipping.
#ifndef REPTRACE_TESTS_TESTING_TEST_DATABASE_H_
#define REPTRACE_TESTS_TESTING_TEST_DATABASE_H_

#include <string>

namespace reptrace::testing {

class TestDatabase {
 public:
  // Creates database "reptrace_test_<random>". Aborts the test (FAIL) on error.
  TestDatabase();
  ~TestDatabase();  // drops the database, terminating any connection left to it
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  // libpq conninfo of the new database.
  const std::string& conninfo() const { return conninfo_; }
  const std::string& name() const { return name_; }
  bool ok() const { return !conninfo_.empty(); }

 private:
  std::string admin_conninfo_;
  std::string name_;
  std::string conninfo_;
};

}  // namespace reptrace::testing

#endif  // REPTRACE_TESTS_TESTING_TEST_DATABASE_H_
