// Specification of the `patledger` CLI (tools/cli.h), driven through RunCli exactly
// as a shell would run it; each call opens the ledger afresh, so every step also
// proves that the previous one survived a restart.

#include "tools/cli.h"

#include <boost/test/unit_test.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/clock.h"
#include "tests/test_util.h"

namespace patledger::tools {
namespace {

struct Run {
  int code = 0;
  std::string out, err;
};

class CliFixture {
 public:
  Run Cli(std::vector<std::string> args, const std::string& stdin_text = "") {
    args.insert(args.begin(), "patledger");
    args.push_back("--data");
    args.push_back(dir_.path());
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    std::istringstream in(stdin_text);
    std::ostringstream out, err;
    Run r;
    r.code = RunCli(static_cast<int>(argv.size()), argv.data(), in, out, err);
    r.out = out.str();
    r.err = err.str();
    return r;
  }

  static std::string Line(const std::string& s) { return s.substr(0, s.find('\n')); }

  static std::string InDays(int days) {
    return FormatDate(DayOf(SystemClock::Get()->NowMicros()) + days);
  }

  TempDir dir_;
};

BOOST_FIXTURE_TEST_SUITE(cli, CliFixture)

BOOST_AUTO_TEST_CASE(init_create_auth_revoke_as_the_readme_shows) {
  Run init = Cli({"init"});
  BOOST_TEST_REQUIRE(init.code == 0, init.err);
  const std::string root = Line(init.out);
  BOOST_TEST(init.out == root + "\n");  // the token alone on stdout
  BOOST_TEST(root.starts_with("glpat-"));
  BOOST_TEST(init.err.find(root) == std::string::npos);

  Run create = Cli({"token", "create", "--user", "root", "--name", "ci", "--scopes", "api",
                    "--expires", InDays(30)});
  BOOST_TEST_REQUIRE(create.code == 0, create.err);
  const std::string token = Line(create.out);
  BOOST_TEST(create.out == token + "\n");
  BOOST_TEST(create.err.find(token) == std::string::npos);

  Run ok = Cli({"auth", token, "--scope", "api"});
  BOOST_TEST(ok.code == 0, ok.err);
  BOOST_TEST(ok.out.find("user root") != std::string::npos);

  Run revoke = Cli({"token", "revoke", "2"});
  BOOST_TEST_REQUIRE(revoke.code == 0, revoke.err);
  Run refused = Cli({"auth", token, "--scope", "api"});
  BOOST_TEST(refused.code == 1);
  BOOST_TEST(refused.err.find("revoked") != std::string::npos);
  BOOST_TEST(refused.err.find(token) == std::string::npos);

  // From stdin, to keep it out of shell history; --at answers for the past.
  Run stdin_auth = Cli({"auth", "-"}, token + "\n");
  BOOST_TEST(stdin_auth.code == 1);
  std::string an_hour_ago = "@";  // (built in steps: GCC 12 -Wrestrict false positive)
  an_hour_ago += std::to_string(SystemClock::Get()->NowMicros() / 1'000'000 - 3600);
  Run past = Cli({"auth", "-", "--at", an_hour_ago}, token + "\n");
  BOOST_TEST(past.code == 1);  // an hour ago it did not exist yet
  BOOST_TEST(past.err.find("unknown") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(init_refuses_an_existing_ledger_and_prints_no_second_token) {
  BOOST_TEST_REQUIRE(Cli({"init"}).code == 0);
  Run again = Cli({"init"});
  BOOST_TEST(again.code == 4);
  BOOST_TEST(again.out.empty());
  BOOST_TEST(again.err.find("already exists") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(listings_and_json_never_show_a_secret) {
  BOOST_TEST_REQUIRE(Cli({"init"}).code == 0);
  BOOST_TEST_REQUIRE(Cli({"user", "add", "alice", "--name", "Alice", "--email", "a@x.org"})
                         .code == 0);
  Run created = Cli({"token", "create", "--user", "alice", "--name", "deploy", "--scopes",
                     "read_api,read_registry", "--expires", InDays(10), "--json"});
  BOOST_TEST_REQUIRE(created.code == 0, created.err);
  const auto at = created.out.find("\"token\":\"");
  BOOST_TEST_REQUIRE(at != std::string::npos);
  const std::string secret = created.out.substr(at + 9, 42);
  for (auto args : std::vector<std::vector<std::string>>{{"token", "list"},
                                                         {"token", "list", "--json"},
                                                         {"token", "show", "2"},
                                                         {"token", "show", "2", "--json"},
                                                         {"user", "list", "--json"}}) {
    Run r = Cli(args);
    BOOST_TEST(r.code == 0, r.err);
    BOOST_TEST(r.out.find(secret.substr(6)) == std::string::npos);
  }
  Run show = Cli({"token", "show", "2"});
  BOOST_TEST(show.out.find("deploy") != std::string::npos);
  BOOST_TEST(show.out.find("read_registry, read_api") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(errors_go_to_stderr_with_a_nonzero_exit_and_change_nothing) {
  BOOST_TEST_REQUIRE(Cli({"init"}).code == 0);
  struct Case {
    std::vector<std::string> args;
    int code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"token", "create", "--user", "root", "--name", "x", "--scopes", "bogus"}, 2, "valid"},
      {{"token", "create", "--user", "nobody", "--name", "x", "--scopes", "api"}, 3, "nobody"},
      {{"token", "create", "--user", "root", "--name", "x", "--scopes", "api", "--expires",
        "2001-01-01"},
       2, "after today"},
      {{"token", "create", "--user", "root", "--name", "x", "--scopes", "api", "--expires",
        "soon"},
       2, "YYYY-MM-DD"},
      {{"token", "create", "--user", "root", "--scopes", "api"}, 2, "name"},
      {{"token", "revoke", "99"}, 3, "99"},
      {{"token", "revoke", "abc"}, 2, "positive integer"},
      {{"user", "block", "ghost"}, 3, "ghost"},
      {{"frobnicate"}, 2, "unknown command"},
  };
  Run before = Cli({"token", "list", "--json"});
  for (const Case& c : cases) {
    Run r = Cli(c.args);
    BOOST_TEST(r.code == c.code, c.args[0] << " " << (c.args.size() > 1 ? c.args[1] : "")
                                           << ": " << r.err);
    BOOST_TEST(r.err.find(c.says) != std::string::npos, r.err);
  }
  BOOST_TEST(Cli({"token", "list", "--json"}).out == before.out);
}

BOOST_AUTO_TEST_CASE(commands_on_a_missing_ledger_say_to_run_init) {
  Run r = Cli({"token", "list"});
  BOOST_TEST(r.code == 3);
  BOOST_TEST(r.err.find("patledger init") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(every_command_has_help) {
  for (auto args : std::vector<std::vector<std::string>>{
           {"--help"}, {"init", "--help"}, {"user", "add", "--help"},
           {"token", "create", "--help"}, {"token", "list", "--help"}, {"auth", "--help"}}) {
    Run r = Cli(args);
    BOOST_TEST(r.code == 0, args[0]);
    BOOST_TEST(r.out.find("usage") != std::string::npos, args[0]);
  }
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::tools
