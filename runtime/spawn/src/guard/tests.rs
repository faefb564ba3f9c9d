use super::*;

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

#[test]
fn the_janitor_removes_the_directories_of_the_files_joined() {
    assert_eq!(
        parent_dir(&c("/sys/fs/cgroup/ffrtmp/n1/job-a-1/cgroup.procs")),
        Some(c("/sys/fs/cgroup/ffrtmp/n1/job-a-1"))
    );
    assert_eq!(
        parent_dir(&c("/sys/fs/cgroup/memory/ffrtmp/n1/job-a-1/tasks")),
        Some(c("/sys/fs/cgroup/memory/ffrtmp/n1/job-a-1"))
    );
    assert_eq!(parent_dir(&c("/tasks")), None, "never the root");
    assert_eq!(parent_dir(&c("tasks")), None);
}
